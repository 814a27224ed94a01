//go:build openblas

package main

// blasName names the matrix-product implementation this binary uses
// (built with -tags openblas; run with OPENBLAS_CORETYPE=SkylakeX on
// AVX-512 CPUs that Debian's OpenBLAS 0.3.21 does not recognise).
const blasName = "OpenBLAS (cgo, gonum netlib)"
