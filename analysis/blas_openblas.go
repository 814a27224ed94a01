//go:build openblas

package analysis

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"
)

// BLASName names the implementation behind the package's matrix products.
//
// With -tags openblas (and CGO_LDFLAGS=-lopenblas, Debian's
// libopenblas-dev), every blas64 and blas32 call of the process goes to
// OpenBLAS through gonum's cgo bindings. Debian's OpenBLAS 0.3.21 does not
// recognise AMD Zen 4/5 and falls back to its Haswell (AVX2) kernels; run
// with OPENBLAS_CORETYPE=SkylakeX to get the AVX-512 ones (about 2x). The
// variable is read when the library loads, so it must be in the
// environment of the process.
const BLASName = "OpenBLAS (cgo, gonum netlib)"

func init() {
	blas64.Use(netlib.Implementation{})
	blas32.Use(netlib.Implementation{})
}

// transposeFirst: OpenBLAS packs its operands whatever their layout.
const transposeFirst = false

// BLASKernel says which micro-kernel the products run on: OpenBLAS picks
// its own (see OPENBLAS_CORETYPE above).
func BLASKernel() string { return "OpenBLAS's choice" }
