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
	CGIter     int     // MaskedCG's iterations at most
	CGTol      float64 // MaskedCG stops when every row's residual is below CGTol of its right-hand side
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
	if flops > o.ExactFlops {
		return MaskedCG(gram, c, out, in, pruned, lambda, x, o.CGIter, o.CGTol)
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
// of its right-hand side. x is [out, in+1], 0 at pruned positions.
func MaskedCG(gram, c []float64, out, in int, pruned []bool, lambda float64, x []float64, iter int, tol float64) string {
	m := in + 1
	a := make([]float64, m*m)
	copy(a, gram)
	for j := 0; j < in; j++ {
		a[j*m+j] += lambda
	}
	keep := make([]float64, m*out) // 1 where the row (column here) keeps the weight
	for j := 0; j < m; j++ {
		for i := 0; i < out; i++ {
			if j == in || !pruned[i*in+j] {
				keep[j*out+i] = 1
			}
		}
	}
	inv := make([]float64, m)
	for j := range inv {
		if d := a[j*m+j]; d > 0 {
			inv[j] = 1 / d
		}
	}
	xs := make([]float64, m*out)
	r := make([]float64, m*out)
	z := make([]float64, m*out)
	p := make([]float64, m*out)
	ap := make([]float64, m*out)
	for q := range r {
		r[q] = -c[q] * keep[q]
		z[q] = r[q] * inv[q/out]
	}
	copy(p, z)
	rz := make([]float64, out)
	bn := make([]float64, out)
	colDot := func(u, v, dst []float64) {
		clear(dst)
		for j := 0; j < m; j++ {
			ur, vr := u[j*out:(j+1)*out], v[j*out:(j+1)*out]
			for i := range dst {
				dst[i] += ur[i] * vr[i]
			}
		}
	}
	colDot(r, z, rz)
	colDot(r, r, bn)
	pap := make([]float64, out)
	rr := make([]float64, out)
	it := 0
	for ; it < iter; it++ {
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
			blas64.General{Rows: m, Cols: m, Stride: m, Data: a},
			blas64.General{Rows: m, Cols: out, Stride: out, Data: p},
			0, blas64.General{Rows: m, Cols: out, Stride: out, Data: ap})
		for q := range ap {
			ap[q] *= keep[q]
		}
		colDot(p, ap, pap)
		alpha := pap // reused: alpha_i = rz_i / (p_i . A p_i)
		for i, v := range pap {
			if v > 0 && !math.IsInf(rz[i], 0) {
				alpha[i] = rz[i] / v
			} else {
				alpha[i] = 0
			}
		}
		for j := 0; j < m; j++ {
			row := j * out
			for i := 0; i < out; i++ {
				xs[row+i] += alpha[i] * p[row+i]
				r[row+i] -= alpha[i] * ap[row+i]
				z[row+i] = r[row+i] * inv[j]
			}
		}
		colDot(r, r, rr)
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
		old := append([]float64(nil), rz...)
		colDot(r, z, rz)
		for j := 0; j < m; j++ {
			row := j * out
			for i := 0; i < out; i++ {
				beta := 0.0
				if old[i] > 0 {
					beta = rz[i] / old[i]
				}
				p[row+i] = z[row+i] + beta*p[row+i]
			}
		}
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
	return fmt.Sprintf("conjugate gradients, %d iterations, relative residual %.1g", it, worst)
}
