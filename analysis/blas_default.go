//go:build !openblas

package analysis

// BLASName names the implementation behind the package's matrix products
// (matmul, matmul32): by default gonum's pure-Go BLAS, blocked and run in
// parallel over GOMAXPROCS, with assembly vector kernels (SSE2) on amd64.
// Build with -tags openblas for OpenBLAS (blas_openblas.go).
const BLASName = "gonum (pure Go)"
