package analysis

import (
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// blas32Impl and blas64Impl are what blas32.Use and blas64.Use take.
type (
	blas32Impl = blas.Float32
	blas64Impl = blas.Float64
)

var fastOnce sync.Once

// UseFastGemm makes every gonum blas32/blas64 call of the process use the
// implementation behind the package's own products (BLASName): gonum's
// routines with the matrix products on internal/gemm (or OpenBLAS with
// -tags openblas). The package's products use it whether or not this is
// called; callers that multiply matrices through gonum themselves (ec+'s
// products and its LAPACK solves in package prune) call it so that their
// products run on the same kernels, and their results are the ones
// ecprune's CLI gives. It changes gonum's process-wide setting, which is
// why it is an explicit call of the program and not a side effect of
// importing the package. Safe to call more than once and concurrently.
func UseFastGemm() {
	fastOnce.Do(func() {
		blas32.Use(products32)
		blas64.Use(products64)
	})
}

// gemm32 is blas32.Gemm on the package's implementation, whatever gonum's
// process-wide one is.
func gemm32(tA, tB blas.Transpose, alpha float32, a, b blas32.General, beta float32, c blas32.General) {
	k := a.Cols
	if tA != blas.NoTrans {
		k = a.Rows
	}
	products32.Sgemm(tA, tB, c.Rows, c.Cols, k, alpha, a.Data, a.Stride, b.Data, b.Stride, beta, c.Data, c.Stride)
}

// gemm64 is blas64.Gemm on the package's implementation.
func gemm64(tA, tB blas.Transpose, alpha float64, a, b blas64.General, beta float64, c blas64.General) {
	k := a.Cols
	if tA != blas.NoTrans {
		k = a.Rows
	}
	products64.Dgemm(tA, tB, c.Rows, c.Cols, k, alpha, a.Data, a.Stride, b.Data, b.Stride, beta, c.Data, c.Stride)
}
