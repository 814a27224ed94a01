package ecplus

import (
	"os"
	"testing"

	"github.com/ecprune/ecprune/analysis"
)

// TestMain runs the tests with the BLAS ecprune's CLI uses, so that ec+'s
// results here are the CLI's.
func TestMain(m *testing.M) {
	analysis.UseFastGemm()
	os.Exit(m.Run())
}
