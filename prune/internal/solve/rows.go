package solve

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
)

// MaskedOptions choose and bound the solver of Masked.
type MaskedOptions struct {
	// ExactFlops bounds the Cholesky factorisations of the rows,
	// sum_i (|K_i|+1)^3 / 3 multiply-adds: above it (wide layers at
	// moderate sparsity: 1024 rows of 500 kept weights are 4e10) the rows
	// are solved together by MaskedCG, whose every iteration is one matrix
	// product with the Gram matrix.
	ExactFlops float64
	// Flops, if > 0, is the factorisation cost compared with ExactFlops
	// in place of that of the rows given: a subset of a layer's rows is
	// then solved the way the whole layer is (MaskedFlops of all rows).
	Flops  float64
	CGIter int // MaskedCG's iterations at most
	// CGDeflate, if > 0, adds to MaskedCG's Jacobi preconditioner the
	// deflation of that many of the scaled Gram matrix's largest
	// eigen-directions (see deflation): far fewer iterations for the
	// same residual on correlated inputs.
	CGDeflate int
	CGTol     float64 // MaskedCG stops when every row of a block has its residual below CGTol of its right-hand side
	// CGBlockBytes bounds the conjugate gradients' four [in+1, rows]
	// vectors and the mask and deflation factors (counted as a fifth
	// vector): the rows go through MaskedCG in blocks of as many as fit
	// (0: all rows at once). Rows are independent systems, so blocks
	// only change the result when a block converges before the others.
	CGBlockBytes int
	// Scratch, if set, holds MaskedCG's vectors from one solve to the
	// next (a layer's held-out test, then its full solve, then the next
	// layer's): fresh memory of that size costs page faults.
	Scratch *CGScratch
}

// CGScratch is MaskedCG's working memory, reusable by solves of any size
// (one at a time).
type CGScratch struct {
	f    []float64
	keep []bool
}

// floats returns k zeroed vectors of n values from s (fresh ones if s is
// nil).
func (s *CGScratch) floats(k, n int) [][]float64 {
	var buf []float64
	if s == nil {
		buf = make([]float64, k*n)
	} else {
		if cap(s.f) < k*n {
			s.f = make([]float64, k*n)
		}
		buf = s.f[:k*n]
		clear(buf)
	}
	v := make([][]float64, k)
	for i := range v {
		v[i] = buf[i*n : (i+1)*n : (i+1)*n]
	}
	return v
}

func (s *CGScratch) bools(n int) []bool {
	if s == nil {
		return make([]bool, n)
	}
	if cap(s.keep) < n {
		s.keep = make([]bool, n)
	}
	return s.keep[:n]
}

// MaskedFlops is the cost of Masked's Cholesky factorisations of the
// rows of pruned ([out, in]): sum_i (|K_i|+1)^3 / 3 multiply-adds.
func MaskedFlops(out, in int, pruned []bool) float64 {
	var flops float64
	for i := 0; i < out; i++ {
		k := 1.0
		for _, p := range pruned[i*in : (i+1)*in] {
			if !p {
				k++
			}
		}
		flops += k * k * k / 3
	}
	return flops
}

// Masked solves the damped least squares of every row i of a layer,
//
//	min_x ||A_K x_K + beta 1 + e_i||^2 + lambda ||x_K||^2,
//
// K the row's kept columns (pruned [out, in] false), from the augmented
// Gram matrix gram ([in+1, in+1] of [A; 1], the last row and column the
// undamped intercept beta) and cross products c ([in+1, out]: [A; 1] e^T),
// writing the solutions into x ([out, in+1]: kept weights, then the
// intercept; 0 at pruned positions). Rows share the Gram matrix but not
// their masks: each is one Cholesky factorisation of size |K|+1 (in
// parallel), or all go through MaskedCG when that costs too much. It
// returns which, for the log.
func Masked(gram, c []float64, out, in int, pruned []bool, lambda float64, x []float64, o MaskedOptions) string {
	m := in + 1
	flops := o.Flops
	if flops <= 0 {
		flops = MaskedFlops(out, in, pruned)
	}
	if flops > o.ExactFlops {
		return maskedCGBlocks(gram, c, out, in, pruned, lambda, x, o)
	}
	workers := min(runtime.GOMAXPROCS(0), max(out, 1))
	var wg sync.WaitGroup
	next := make(chan int, out)
	for i := 0; i < out; i++ {
		next <- i
	}
	close(next)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keep := make([]int, 0, m)
			var a, b []float64
			for i := range next {
				xi := x[i*m : (i+1)*m]
				clear(xi)
				keep = keep[:0]
				for j := 0; j < in; j++ {
					if !pruned[i*in+j] {
						keep = append(keep, j)
					}
				}
				keep = append(keep, in)
				k := len(keep)
				if cap(a) < k*k {
					a = make([]float64, k*k)
				}
				if cap(b) < k {
					b = make([]float64, k)
				}
				a, b = a[:k*k], b[:k]
				for p, jp := range keep {
					row := gram[jp*m : (jp+1)*m]
					for q, jq := range keep {
						a[p*k+q] = row[jq]
					}
					if jp != in {
						a[p*k+p] += lambda
					}
					b[p] = -c[jp*out+i]
				}
				if !cholSolve(a, b, k) {
					continue // singular even with damping: leave the row
				}
				for p, jp := range keep {
					xi[jp] = b[p]
				}
			}
		}()
	}
	wg.Wait()
	return "Cholesky per row"
}

// cholSolve solves a x = b in place (b becomes x) for a symmetric positive
// definite k x k matrix a (overwritten); false if it is not, or the
// solution is not finite.
func cholSolve(a, b []float64, k int) bool {
	t, ok := lapack64.Potrf(blas64.Symmetric{Uplo: blas.Upper, N: k, Stride: k, Data: a[:k*k]})
	if !ok {
		return false
	}
	lapack64.Potrs(t, blas64.General{Rows: k, Cols: 1, Stride: 1, Data: b[:k]})
	return finite(b[:k])
}

// MaskedCG solves Masked's systems (the damped Gram matrix restricted to
// each row's kept columns and the intercept) all at once by conjugate
// gradients with a Jacobi preconditioner: the rows are the columns of one
// [in+1, out] matrix, each iteration multiplies it by the Gram matrix once
// and masks the pruned positions, and the step lengths are per row. It
// stops after iter iterations or when every row's residual is below tol
// of its right-hand side. x is [out, in+1], 0 at pruned positions. gram
// is changed during the solve and restored before it returns.
func MaskedCG(gram, c []float64, out, in int, pruned []bool, lambda float64, x []float64, iter int, tol float64) string {
	it, worst := maskedCG(gram, c, out, in, pruned, lambda, x, iter, tol, nil, nil)
	return cgReport(it, worst)
}

func cgReport(it int, worst float64) string {
	return fmt.Sprintf("conjugate gradients, %d iterations, relative residual %.1g", it, worst)
}

// maskedCGBlocks is MaskedCG on blocks of rows that keep its vectors
// within o.CGBlockBytes: on a 4096-wide layer all rows at once take four
// 128 MiB vectors. A block's right-hand sides are gathered from c's
// columns; its rows of pruned and x are contiguous already.
func maskedCGBlocks(gram, c []float64, out, in int, pruned []bool, lambda float64, x []float64, o MaskedOptions) string {
	m := in + 1
	block := out
	if o.CGBlockBytes > 0 {
		block = min(out, max(1, o.CGBlockBytes/(5*8*m)))
	}
	// The deflation's basis depends on the Gram matrix alone: one for
	// all blocks.
	var basis *deflBasis
	if o.CGDeflate > 0 {
		restore := damp(gram, in, lambda)
		basis = newDeflBasis(gram, m, o.CGDeflate)
		restore()
	}
	if block == out {
		it, worst := maskedCG(gram, c, out, in, pruned, lambda, x, o.CGIter, o.CGTol, o.Scratch, basis)
		return cgReport(it, worst) + deflReport(basis)
	}
	cb := make([]float64, m*block)
	iters, worst := 0, 0.0
	for i0 := 0; i0 < out; i0 += block {
		nb := min(block, out-i0)
		cb = cb[:m*nb]
		for j := 0; j < m; j++ {
			copy(cb[j*nb:(j+1)*nb], c[j*out+i0:j*out+i0+nb])
		}
		it, w := maskedCG(gram, cb, nb, in, pruned[i0*in:(i0+nb)*in], lambda, x[i0*m:(i0+nb)*m], o.CGIter, o.CGTol, o.Scratch, basis)
		iters, worst = max(iters, it), math.Max(worst, w)
	}
	return cgReport(iters, worst) + deflReport(basis) + fmt.Sprintf(" (blocks of %d rows)", block)
}

func deflReport(b *deflBasis) string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf(", %d directions deflated", b.r)
}

// damp adds lambda to the diagonal of gram ([in+1, in+1]) but the
// intercept's, and returns the function that restores it exactly (a
// damped copy would be the largest allocation of a wide layer's solve).
func damp(gram []float64, in int, lambda float64) (restore func()) {
	m := in + 1
	diag := make([]float64, in)
	for j := range diag {
		diag[j] = gram[j*m+j]
		gram[j*m+j] += lambda
	}
	return func() {
		for j, v := range diag {
			gram[j*m+j] = v
		}
	}
}

// maskedCG is MaskedCG, returning the iterations run and the worst
// relative residual; its vectors come from scr (nil: fresh), and it is
// preconditioned by the deflation of basis (nil: Jacobi). The rows are
// independent systems, so the element-wise work of an iteration is split
// by rows (columns here) over GOMAXPROCS goroutines, and each per-row sum
// runs over j in order, as a single pass would: the result does not
// depend on the split.
func maskedCG(gram, c []float64, out, in int, pruned []bool, lambda float64, x []float64, iter int, tol float64, scr *CGScratch, basis *deflBasis) (int, float64) {
	m := in + 1
	// The damping goes on gram's diagonal for the solve only.
	a := gram
	defer damp(gram, in, lambda)()
	// keep is the mask of [in+1, out]: true where the row (a column here)
	// keeps the weight. A pruned position is multiplied by 0 rather than
	// set to 0, and a kept one left as it is, so that every value (signed
	// zeros, NaN from infinities) is that of a product with a 0/1 mask.
	keep := scr.bools(m * out)
	for j := 0; j < m; j++ {
		for i := 0; i < out; i++ {
			keep[j*out+i] = j == in || !pruned[i*in+j]
		}
	}
	inv := make([]float64, m)
	for j := range inv {
		if d := a[j*m+j]; d > 0 {
			inv[j] = 1 / d
		}
	}
	// The preconditioned residual z shares A p's storage: A p is spent
	// once r is updated, and z once p is, before the next product. One
	// vector less of fresh memory (page faults) per solve.
	v := scr.floats(4, m*out)
	xs, r, p, ap := v[0], v[1], v[2], v[3]
	z := ap
	var pre *deflation
	if basis != nil {
		pre = basis.rows(keep, out, ap) // ap is free until the first product
	}
	rz := make([]float64, out)
	rzNext := make([]float64, out)
	bn := make([]float64, out)
	pap := make([]float64, out)
	rr := make([]float64, out)
	cols(m, out, func(i0, i1 int) {
		for j := 0; j < m; j++ {
			for q := j*out + i0; q < j*out+i1; q++ {
				if r[q] = -c[q]; !keep[q] {
					r[q] *= 0
				}
				bn[q-j*out] += r[q] * r[q]
				if pre == nil {
					z[q] = r[q] * inv[j]
				}
			}
		}
	})
	if pre != nil {
		pre.apply(r, z, keep)
	}
	cols(m, out, func(i0, i1 int) {
		for j := 0; j < m; j++ {
			for q := j*out + i0; q < j*out+i1; q++ {
				p[q] = z[q]
				rz[q-j*out] += r[q] * z[q]
			}
		}
	})
	it := 0
	for ; it < iter; it++ {
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
			blas64.General{Rows: m, Cols: m, Stride: m, Data: a},
			blas64.General{Rows: m, Cols: out, Stride: out, Data: p},
			0, blas64.General{Rows: m, Cols: out, Stride: out, Data: ap})
		// Mask A p and take p . A p; then alpha_i = rz_i / (p_i . A p_i),
		// the steps, and the next residual's r.r and r.z.
		cols(m, out, func(i0, i1 int) {
			clear(pap[i0:i1])
			for j := 0; j < m; j++ {
				row := j * out
				for i := i0; i < i1; i++ {
					if !keep[row+i] {
						ap[row+i] *= 0
					}
					pap[i] += p[row+i] * ap[row+i]
				}
			}
			alpha := pap[i0:i1] // reused
			for k, v := range alpha {
				if i := i0 + k; v > 0 && !math.IsInf(rz[i], 0) {
					alpha[k] = rz[i] / v
				} else {
					alpha[k] = 0
				}
			}
			clear(rr[i0:i1])
			clear(rzNext[i0:i1])
			for j := 0; j < m; j++ {
				row := j * out
				for i := i0; i < i1; i++ {
					al := pap[i]
					xs[row+i] += al * p[row+i]
					r[row+i] -= al * ap[row+i]
					rr[i] += r[row+i] * r[row+i]
					if pre == nil {
						z[row+i] = r[row+i] * inv[j]
						rzNext[i] += r[row+i] * z[row+i]
					}
				}
			}
		})
		if pre != nil {
			pre.apply(r, z, keep)
			cols(m, out, func(i0, i1 int) {
				for j := 0; j < m; j++ {
					row := j * out
					for i := i0; i < i1; i++ {
						rzNext[i] += r[row+i] * z[row+i]
					}
				}
			})
		}
		done := true
		for i := range rr {
			if rr[i] > tol*tol*bn[i] {
				done = false
				break
			}
		}
		if done {
			it++
			break
		}
		cols(m, out, func(i0, i1 int) {
			for i := i0; i < i1; i++ {
				old := rz[i]
				rz[i] = rzNext[i]
				beta := 0.0
				if old > 0 {
					beta = rz[i] / old
				}
				pap[i] = beta // reused
			}
			for j := 0; j < m; j++ {
				row := j * out
				for i := i0; i < i1; i++ {
					p[row+i] = z[row+i] + pap[i]*p[row+i]
				}
			}
		})
	}
	for i := 0; i < out; i++ {
		for j := 0; j < m; j++ {
			if v := xs[j*out+i]; finite([]float64{v}) {
				x[i*m+j] = v
			} else {
				x[i*m+j] = 0
			}
		}
	}
	worst := 0.0
	for i := range rr {
		if bn[i] > 0 {
			worst = math.Max(worst, math.Sqrt(rr[i]/bn[i]))
		}
	}
	return it, worst
}

// cols runs f on column ranges [i0, i1) of a [m, out] matrix, on up to
// GOMAXPROCS goroutines when the matrix is large enough to be worth it.
func cols(m, out int, f func(i0, i1 int)) {
	w := runtime.GOMAXPROCS(0)
	if m*out < 1<<16 || w < 2 || out < 2*w {
		f(0, out)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		i0, i1 := k*out/w, (k+1)*out/w
		wg.Go(func() { f(i0, i1) })
	}
	wg.Wait()
}
