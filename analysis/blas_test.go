package analysis

import (
	"testing"

	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// TestUseFastGemm: importing the package leaves gonum's process-wide BLAS
// alone; UseFastGemm installs the package's implementation.
func TestUseFastGemm(t *testing.T) {
	// Only the first run (-count) sees the state before the call.
	if !fastGemmTested && (blas64.Implementation() == products64 || blas32.Implementation() == products32) {
		t.Fatal("gonum's BLAS replaced before UseFastGemm")
	}
	UseFastGemm()
	UseFastGemm()
	if blas64.Implementation() != products64 || blas32.Implementation() != products32 {
		t.Fatal("UseFastGemm did not install the package's BLAS")
	}
	fastGemmTested = true
}

var fastGemmTested bool
