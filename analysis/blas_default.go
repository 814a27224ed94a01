//go:build !openblas

package analysis

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/ecprune/ecprune/analysis/internal/gemm"
)

// BLASName names the implementation behind the package's matrix products
// (matmul, matmul32): by default gonum's pure-Go BLAS with its matrix
// product (Sgemm, Dgemm) replaced by analysis/internal/gemm, packed,
// blocked, parallel over GOMAXPROCS, with AVX-512 or AVX2 assembly
// micro-kernels on amd64 (gonum's own are SSE2 loops, 5 to 10 times
// slower). Build with -tags openblas for OpenBLAS (blas_openblas.go).
const BLASName = "gonum (pure Go) + internal/gemm (Go assembly)"

// products are the implementations of the package's own matrix products
// (gemm32, gemm64) and of UseFastGemm: gonum's BLAS with its matrix
// products on internal/gemm.
var (
	products32 blas32Impl = impl32{}
	products64 blas64Impl = impl64{}
)

type impl32 struct{ gonum.Implementation }

func (impl32) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gemm.Sgemm(isTrans(tA), isTrans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

type impl64 struct{ gonum.Implementation }

func (impl64) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	gemm.Dgemm(isTrans(tA), isTrans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// BLASKernel says which micro-kernel the products run on this CPU.
func BLASKernel() string {
	k32, k64 := gemm.Kernel()
	if k32 == k64 {
		return k32
	}
	return k32 + " (float32), " + k64 + " (float64)"
}
