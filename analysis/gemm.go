package analysis

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// matmul computes c = op(a) op(b) + beta c for row-major matrices, where
// op(a) is m x k, op(b) is k x n and c is m x n; op transposes when the
// flag is set (a is then stored k x m, b n x k). Every matrix product of
// the package goes through here, so that the BLAS behind it (gonum's
// pure-Go one by default, which already runs in parallel; OpenBLAS through
// gonum's netlib with blas64.Use) can be swapped in one place.
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
	ta, ar, ac := blas.NoTrans, m, k
	if transA {
		ta, ar, ac = blas.Trans, k, m
	}
	tb, br, bc := blas.NoTrans, k, n
	if transB {
		tb, br, bc = blas.Trans, n, k
	}
	blas64.Gemm(ta, tb, 1,
		blas64.General{Rows: ar, Cols: ac, Stride: ac, Data: a[:ar*ac]},
		blas64.General{Rows: br, Cols: bc, Stride: bc, Data: b[:br*bc]},
		beta,
		blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
}
