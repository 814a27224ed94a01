//go:build !openblas

package analysis

// BLASName names the implementation behind the package's matrix products
// (matmul, matmul32): by default gonum's pure-Go BLAS, blocked and run in
// parallel over GOMAXPROCS, with assembly vector kernels (SSE2) on amd64.
// Build with -tags openblas for OpenBLAS (blas_openblas.go).
const BLASName = "gonum (pure Go)"

// transposeFirst makes matmul copy a^T before multiplying when op(a) is a
// transpose: gonum's kernels for a^T b run at a third to half the speed of
// those for a b (BenchmarkMatmul/stats32 against stats32NN: 12 against 29
// GFLOP/s), and the copy costs m k moves against m n k multiply-adds.
const transposeFirst = true
