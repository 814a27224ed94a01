package analysis

import (
	"fmt"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// matmul computes c = op(a) op(b) + beta c for row-major matrices, where
// op(a) is m x k, op(b) is k x n and c is m x n; op transposes when the
// flag is set (a is then stored k x m, b n x k). Every matrix product of
// the package goes through here, so that the BLAS behind it (gonum's
// pure-Go one by default, which already runs in parallel; OpenBLAS through
// gonum's netlib with blas64.Use and blas32.Use, see blas_openblas.go)
// can be swapped in one place.
func matmul(transA, transB bool, m, n, k int, a, b, c []float64, beta float64) {
	if len(a) < m*k || len(b) < k*n || len(c) < m*n {
		panic(fmt.Sprintf("analysis.matmul: short operand for %dx%dx%d: %d %d %d", m, n, k, len(a), len(b), len(c)))
	}
	if m == 0 || n == 0 {
		return
	}
	if transA && transposeFirst && k > 0 {
		// gonum's kernels for op(a) = a^T run at half the speed of those
		// for a: copy a^T first (m k values against m n k multiply-adds).
		t := make([]float64, m*k)
		transposeInto(t, a[:m*k], k, m)
		a, transA = t, false
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
	blas64.Gemm(ta, tb, 1,
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
	if len(a) < m*k || len(b) < k*n || len(c) < m*n {
		panic(fmt.Sprintf("analysis.matmul32: short operand for %dx%dx%d: %d %d %d", m, n, k, len(a), len(b), len(c)))
	}
	if m == 0 || n == 0 || k == 0 {
		matmul(transA, transB, m, n, k, a, b, c, beta)
		return
	}
	ta, ar, ac, tb, br, bc := blasShapes(transA, transB, m, n, k)
	a32, b32, c32 := getF32(m*k), getF32(k*n), getF32(m*n)
	defer putF32(a32)
	defer putF32(b32)
	defer putF32(c32)
	toF32(*a32, a[:m*k])
	if transA && transposeFirst {
		t := getF32(m * k)
		defer putF32(t)
		transposeInto(*t, *a32, k, m)
		a32, t = t, a32
		ta, ar, ac = blas.NoTrans, m, k
	}
	toF32(*b32, b[:k*n])
	blas32.Gemm(ta, tb, 1,
		blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: *a32},
		blas32.General{Rows: br, Cols: bc, Stride: bc, Data: *b32},
		0,
		blas32.General{Rows: m, Cols: n, Stride: n, Data: *c32})
	addF32(c[:m*n], *c32, beta)
}

// f32Pool recycles the float32 operands of matmul32, which are as large
// as the tangent batches.
var f32Pool sync.Pool

func getF32(n int) *[]float32 {
	if p, ok := f32Pool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

func putF32(p *[]float32) { f32Pool.Put(p) }

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

func toF32(dst []float32, src []float64) {
	parallelChunks(len(src), func(lo, hi int) {
		d, s := dst[lo:hi], src[lo:hi]
		for i, v := range s {
			d[i] = float32(v)
		}
	})
}

// addF32 sets c = beta c + float64(s).
func addF32(c []float64, s []float32, beta float64) {
	parallelChunks(len(c), func(lo, hi int) {
		d, v := c[lo:hi], s[lo:hi]
		switch beta {
		case 0:
			for i, x := range v {
				d[i] = float64(x)
			}
		case 1:
			for i, x := range v {
				d[i] += float64(x)
			}
		default:
			for i, x := range v {
				d[i] = beta*d[i] + float64(x)
			}
		}
	})
}

// matmulW32 is matmul32 with b given in float32 already (cached weights).
func matmulW32(transA, transB bool, m, n, k int, a []float64, b32 []float32, c []float64, beta float64) {
	if len(a) < m*k || len(b32) < k*n || len(c) < m*n {
		panic(fmt.Sprintf("analysis.matmulW32: short operand for %dx%dx%d: %d %d %d", m, n, k, len(a), len(b32), len(c)))
	}
	if m == 0 || n == 0 {
		return
	}
	ta, ar, ac, tb, br, bc := blasShapes(transA, transB, m, n, k)
	a32, c32 := getF32(m*k), getF32(m*n)
	defer putF32(a32)
	defer putF32(c32)
	toF32(*a32, a[:m*k])
	blas32.Gemm(ta, tb, 1,
		blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: *a32},
		blas32.General{Rows: br, Cols: bc, Stride: bc, Data: b32[:k*n]},
		0,
		blas32.General{Rows: m, Cols: n, Stride: n, Data: *c32})
	addF32(c[:m*n], *c32, beta)
}

// transposeInto sets dst (cols x rows) to the transpose of src (rows x
// cols), in tiles that stay in cache.
func transposeInto[T float32 | float64](dst, src []T, rows, cols int) {
	const tile = 32
	for r0 := 0; r0 < rows; r0 += tile {
		r1 := min(rows, r0+tile)
		for c0 := 0; c0 < cols; c0 += tile {
			c1 := min(cols, c0+tile)
			for r := r0; r < r1; r++ {
				row := src[r*cols : (r+1)*cols]
				for c := c0; c < c1; c++ {
					dst[c*rows+r] = row[c]
				}
			}
		}
	}
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
