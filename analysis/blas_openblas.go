//go:build openblas

package analysis

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/netlib/blas/netlib"

	"github.com/ecprune/ecprune/analysis/internal/gemm"
)

// BLASName names the implementation behind the package's matrix products.
//
// With -tags openblas (and CGO_LDFLAGS=-lopenblas, Debian's
// libopenblas-dev), the process's large matrix products (blas64/blas32
// Gemm) go to OpenBLAS through gonum's cgo bindings (see openblas below).
// Debian's OpenBLAS 0.3.21 does not recognise AMD Zen 4/5 and falls back
// to its Haswell (AVX2) kernels; run with OPENBLAS_CORETYPE=SkylakeX to get
// the AVX-512 ones (about 2x). The variable is read when the library
// loads, so it must be in the environment of the process.
const BLASName = "OpenBLAS (cgo, gonum netlib) for large products, internal/gemm and gonum for the rest"

// products are the implementations of the package's own matrix products
// (gemm32, gemm64) and of UseFastGemm.
var (
	products32 blas32Impl = openblas{}
	products64 blas64Impl = openblas{}
)

// smallGemm is the size (multiply-adds) below which a product stays in
// Go (internal/gemm, the default build's kernels): a cgo call and
// OpenBLAS's thread hand-off cost tens of microseconds, which on models
// of a few thousand weights made ec+, with its many small products, 3x
// slower than the pure-Go build.
const smallGemm = 1 << 22

// openblas sends the large matrix products to OpenBLAS and keeps
// everything else in Go: the small products (internal/gemm) and the
// level 1 and 2 routines (gonum's), which are memory-bound and would only
// pay cgo's overhead per call.
type openblas struct{ gonum.Implementation }

var ob netlib.Implementation

func (openblas) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m*n*k < smallGemm {
		gemm.Sgemm(isTrans(tA), isTrans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ob.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func (openblas) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if m*n*k < smallGemm {
		gemm.Dgemm(isTrans(tA), isTrans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ob.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// BLASKernel says which micro-kernel the products run on: OpenBLAS picks
// its own (see OPENBLAS_CORETYPE above).
func BLASKernel() string { return "OpenBLAS's choice" }
