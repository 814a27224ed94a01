package solve

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Gram adds alpha a^T a to c [n, n], a being [rows, n]: one product,
// whose kernel packs the transposed operand, so the layout costs nothing.
// The full matrix is computed; Dense reads its upper triangle.
func Gram(alpha float64, a []float64, rows, n int, c []float64) {
	if n == 0 || rows == 0 {
		return
	}
	blas64.Gemm(blas.Trans, blas.NoTrans, alpha,
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: a[:rows*n]},
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: a[:rows*n]},
		1, blas64.General{Rows: n, Cols: n, Stride: n, Data: c[:n*n]})
}

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
