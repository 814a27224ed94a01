package solve

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Gram adds alpha a^T a to c [n, n], symmetric, a being [rows, n]. Only the upper
// triangle is multiplied, in column blocks of gramBlock (rows [0, j1) of
// columns [j0, j1): about half the work of the whole product), then
// mirrored, so the full matrix is returned; Dense reads its upper
// triangle. Every entry has the bits of the whole product's: the GEMM
// gives an element of C the same bits whatever the shape of the product
// it belongs to, and entry (i, j) multiplies the same pairs in the same
// order as (j, i). (gonum's Dsyrk would do the same work without the
// analysis's fast kernels.)
func Gram(alpha float64, a []float64, rows, n int, c []float64) {
	if n == 0 || rows == 0 {
		return
	}
	a, c = a[:rows*n], c[:n*n]
	for j0 := 0; j0 < n; j0 += gramBlock {
		j1 := min(n, j0+gramBlock)
		blas64.Gemm(blas.Trans, blas.NoTrans, alpha,
			blas64.General{Rows: rows, Cols: j1, Stride: n, Data: a},
			blas64.General{Rows: rows, Cols: j1 - j0, Stride: n, Data: a[j0:]},
			1, blas64.General{Rows: j1, Cols: j1 - j0, Stride: n, Data: c[j0:]})
	}
	for i := 1; i < n; i++ {
		for j := 0; j < i; j++ {
			c[i*n+j] = c[j*n+i]
		}
	}
}

// gramBlock is the column block of Gram's triangle: 256 does 56% of the
// whole product's work on 2058 columns, in products still large enough
// for the kernel's speed. A variable for the tests.
var gramBlock = 256

// AddTN adds x^T y to c: x is [rows, m], y [rows, n], c [m, n].
func AddTN(rows, m, n int, x, y, c []float64) {
	if rows == 0 || m == 0 || n == 0 {
		return
	}
	blas64.Gemm(blas.Trans, blas.NoTrans, 1,
		blas64.General{Rows: rows, Cols: m, Stride: m, Data: x[:rows*m]},
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: y[:rows*n]},
		1, blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
}
