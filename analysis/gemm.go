package analysis

import (
	"fmt"
	"reflect"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/onnxio"
)

// matmul computes c = op(a) op(b) + beta c for row-major matrices, where
// op(a) is m x k, op(b) is k x n and c is m x n; op transposes when the
// flag is set (a is then stored k x m, b n x k). Every matrix product of
// the package goes through here (gemm64), so that the BLAS behind it
// (internal/gemm by default; OpenBLAS for large products with -tags
// openblas, see blas_openblas.go) is chosen in one place.
func matmul(transA, transB bool, m, n, k int, a, b, c []float64, beta float64) {
	if len(a) < m*k || len(b) < k*n || len(c) < m*n {
		panic(fmt.Sprintf("analysis.matmul: short operand for %dx%dx%d: %d %d %d", m, n, k, len(a), len(b), len(c)))
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		// An empty sum; BLAS would reject the zero strides.
		c = c[:m*n]
		if beta == 0 {
			clear(c)
		} else {
			for i := range c {
				c[i] *= beta
			}
		}
		return
	}
	ta, ar, ac, tb, br, bc := blasShapes(transA, transB, m, n, k)
	gemm64(ta, tb, 1,
		blas64.General{Rows: ar, Cols: ac, Stride: ac, Data: a[:ar*ac]},
		blas64.General{Rows: br, Cols: bc, Stride: bc, Data: b[:br*bc]},
		beta,
		blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
}

// matmulFunc is matmul or matmul32: the differentiator takes the one to
// use, so that exact derivatives stay in float64 while probe estimates
// (whose sampling noise dwarfs float32 rounding) use float32 products.
type matmulFunc func(transA, transB bool, m, n, k int, a, b, c []float64, beta float64)

// matmul32 is matmul with the product in float32: a and b are rounded to
// float32, multiplied with blas32.Gemm (float32 accumulation over k), and
// the result is added to beta c in float64. It is about twice as fast as
// matmul with either BLAS and loses about 1e-7 relative per product.
func matmul32(transA, transB bool, m, n, k int, a, b, c []float64, beta float64) {
	MatMul32(transA, transB, m, n, k, 1, a, b, nil, beta, c)
}

// matmulW32 is matmul32 with b given in float32 already (the layers'
// float32 weights).
func matmulW32(transA, transB bool, m, n, k int, a []float64, b32 []float32, c []float64, beta float64) {
	MatMul32(transA, transB, m, n, k, 1, a, nil, b32, beta, c)
}

// MatMul32 sets c = beta c + alpha op(a) op(b) (shapes as matmul's) with
// the product in float32: a, and b unless b32 gives it in float32
// already, are rounded to float32, multiplied with blas32.Gemm, and the
// result is added to c in float64, a block of rows at a time. It is the
// float32 product of probe estimates, here and in ec+.
func MatMul32(transA, transB bool, m, n, k int, alpha float64, a, b []float64, b32 []float32, beta float64, c []float64) {
	if len(a) < m*k || (b32 == nil && len(b) < k*n) || (b32 != nil && len(b32) < k*n) || len(c) < m*n {
		panic(fmt.Sprintf("analysis.MatMul32: short operand for %dx%dx%d: %d %d %d %d", m, n, k, len(a), len(b), len(b32), len(c)))
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		matmul(transA, transB, m, n, 0, a, nil, c, beta) // an empty sum: c = beta c
		return
	}
	a32 := getBuf[float32](m * k)
	defer putBuf(a32)
	convertInto(*a32, a[:m*k])
	if b32 == nil {
		bb := getBuf[float32](k * n)
		defer putBuf(bb)
		convertInto(*bb, b[:k*n])
		b32 = *bb
	}
	ta, ar, ac, tb, br, bc := blasShapes(transA, transB, m, n, k)
	gemm32Into(ta, ar, ac, *a32, tb, br, bc, b32[:k*n], m, n, alpha, c, beta)
}

// c32Max bounds the float32 product that gemm32Into holds before adding it
// to c in float64 (4 MB): the S1/S2 update of a 4096x4096 layer would
// otherwise need a 64 MB float32 copy of the whole result per batch.
var c32Max = 1 << 20

// gemm32Into sets c = beta c + alpha float64(op(a) op(b)), the float32
// product (m x n) computed a block of rows at a time.
func gemm32Into(ta blas.Transpose, ar, ac int, a []float32, tb blas.Transpose, br, bc int, b []float32, m, n int, alpha float64, c []float64, beta float64) {
	mb := max(1, min(m, c32Max/max(n, 1)))
	c32 := getBuf[float32](mb * n)
	defer putBuf(c32)
	bm := blas32.General{Rows: br, Cols: bc, Stride: bc, Data: b}
	for i0 := 0; i0 < m; i0 += mb {
		i1 := min(m, i0+mb)
		// Rows i0..i1 of op(a): rows of a, or columns of a stored k x m.
		var am blas32.General
		if ta == blas.NoTrans {
			am = blas32.General{Rows: i1 - i0, Cols: ac, Stride: ac, Data: a[i0*ac:]}
		} else {
			am = blas32.General{Rows: ar, Cols: i1 - i0, Stride: ac, Data: a[i0:]}
		}
		cm := blas32.General{Rows: i1 - i0, Cols: n, Stride: n, Data: (*c32)[:(i1-i0)*n]}
		gemm32(ta, tb, 1, am, bm, 0, cm)
		addF32(c[i0*n:i1*n], cm.Data, alpha, beta)
	}
}

// pools recycle the float32 and float64 scratch of the products (as
// large as a batch of tangents, or a block of converted weights).
var pool32, pool64 sync.Pool

func poolFor[T float32 | float64]() *sync.Pool {
	var z T
	if any(z) == any(float32(0)) {
		return &pool32
	}
	return &pool64
}

// getBuf returns a slice of n elements (contents undefined) from the pool.
func getBuf[T float32 | float64](n int) *[]T {
	if p, ok := poolFor[T]().Get().(*[]T); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]T, n)
	return &s
}

func putBuf[T float32 | float64](p *[]T) { poolFor[T]().Put(p) }

// parallelChunks runs f over [0, n) in GOMAXPROCS pieces when n is large
// enough to be worth it (the conversions are memory-bound).
func parallelChunks(n int, f func(lo, hi int)) {
	parallelAbove(n, 1<<16, f)
}

// parallelAbove is parallelChunks from n >= least on.
func parallelAbove(n, least int, f func(lo, hi int)) {
	w := runtime.GOMAXPROCS(0)
	if w == 1 || n < least {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + w - 1) / w
	for lo := 0; lo < n; lo += step {
		hi := min(n, lo+step)
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}

// convertInto sets dst to src converted element by element.
func convertInto[D, S float32 | float64](dst []D, src []S) {
	parallelChunks(len(src), func(lo, hi int) {
		d, s := dst[lo:hi], src[lo:hi]
		for i, v := range s {
			d[i] = D(v)
		}
	})
}

// addF32 sets c = beta c + alpha float64(s).
func addF32(c []float64, s []float32, alpha, beta float64) {
	parallelChunks(len(c), func(lo, hi int) {
		d, v := c[lo:hi], s[lo:hi]
		switch {
		case alpha == 1 && beta == 0:
			for i, x := range v {
				d[i] = float64(x)
			}
		case alpha == 1 && beta == 1:
			for i, x := range v {
				d[i] += float64(x)
			}
		case beta == 0:
			for i, x := range v {
				d[i] = alpha * float64(x)
			}
		default:
			for i, x := range v {
				d[i] = beta*d[i] + alpha*float64(x)
			}
		}
	})
}

// blasShapes gives the BLAS transpose flags and the stored shapes of a and
// b for C[m,n] = op(A)[m,k] op(B)[k,n] on row-major data.
func blasShapes(transA, transB bool, m, n, k int) (ta blas.Transpose, ar, ac int, tb blas.Transpose, br, bc int) {
	ta, ar, ac = blas.NoTrans, m, k
	if transA {
		ta, ar, ac = blas.Trans, k, m
	}
	tb, br, bc = blas.NoTrans, k, n
	if transB {
		tb, br, bc = blas.Trans, n, k
	}
	return
}

// isTrans maps a BLAS transpose flag (real matrices: ConjTrans is Trans)
// and panics on anything else, as gonum does.
func isTrans(t blas.Transpose) bool {
	switch t {
	case blas.NoTrans:
		return false
	case blas.Trans, blas.ConjTrans:
		return true
	}
	panic("analysis: bad BLAS transpose flag")
}

// wBlock bounds the float64 copy of float32-resident weights that mulW
// makes for a float64 product (8 MB): a large layer is multiplied in
// blocks of rows of W instead of being copied whole.
var wBlock = 1 << 20

// mulW computes c = a op(W) + beta c with the layer's weights W (Out x In)
// as the second operand: a W^T when transB (m x k times k x n, W n x k),
// else a W (W k x n). mm is matmul or matmul32. Float32-resident weights
// (onnxio.Layer.W32) go to matmulW32 as they are for a float32 product;
// for a float64 one they are converted exactly, a block of rows of W at a
// time, which sums in the same order as one product when transB and in
// blocks of the inner dimension otherwise.
func mulW(mm matmulFunc, transB bool, m, n, k int, a []float64, l *onnxio.Layer, c []float64, beta float64) {
	if l.W32 == nil {
		mm(false, transB, m, n, k, a, l.W, c, beta)
		return
	}
	if isF32(mm) {
		matmulW32(false, transB, m, n, k, a, l.W32, c, beta)
		return
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		matmul(false, transB, m, n, 0, a, nil, c, beta) // an empty sum: c = beta c
		return
	}
	if len(a) < m*k || len(l.W32) < k*n || len(c) < m*n {
		panic(fmt.Sprintf("analysis.mulW: short operand for %dx%dx%d: %d %d %d", m, n, k, len(a), len(l.W32), len(c)))
	}
	if transB {
		nb := max(1, min(n, wBlock/max(k, 1)))
		w := getBuf[float64](nb * k)
		defer putBuf(w)
		if nb == n {
			convertInto(*w, l.W32[:n*k])
			mm(false, true, m, n, k, a, *w, c, beta)
			return
		}
		t := getBuf[float64](m * nb)
		defer putBuf(t)
		for n0 := 0; n0 < n; n0 += nb {
			n1 := min(n, n0+nb)
			convertInto((*w)[:(n1-n0)*k], l.W32[n0*k:n1*k])
			mm(false, true, m, n1-n0, k, a, *w, *t, 0)
			for r := 0; r < m; r++ {
				dst, src := c[r*n+n0:r*n+n1], (*t)[r*(n1-n0):(r+1)*(n1-n0)]
				for j, v := range src {
					if beta == 0 {
						dst[j] = v
					} else {
						dst[j] = beta*dst[j] + v
					}
				}
			}
		}
		return
	}
	kb := max(1, min(k, wBlock/max(n, 1)))
	w := getBuf[float64](kb * n)
	defer putBuf(w)
	if kb == k {
		convertInto(*w, l.W32[:k*n])
		mm(false, false, m, n, k, a, *w, c, beta)
		return
	}
	ab := getBuf[float64](m * kb)
	defer putBuf(ab)
	for k0 := 0; k0 < k; k0 += kb {
		k1 := min(k, k0+kb)
		convertInto((*w)[:(k1-k0)*n], l.W32[k0*n:k1*n])
		for r := 0; r < m; r++ {
			copy((*ab)[r*(k1-k0):(r+1)*(k1-k0)], a[r*k+k0:r*k+k1])
		}
		b := 1.0
		if k0 == 0 {
			b = beta
		}
		mm(false, false, m, n, k1-k0, (*ab)[:m*(k1-k0)], *w, c, b)
	}
}

// isF32 tells matmul32 from matmul (function values compare by code
// pointer only through reflect).
func isF32(mm matmulFunc) bool {
	return reflect.ValueOf(mm).Pointer() == reflect.ValueOf(matmulFunc(matmul32)).Pointer()
}
