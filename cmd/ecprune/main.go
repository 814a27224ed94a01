// Command ecprune prunes the fully-connected layers of ONNX models with
// elimination-compensation pruning and reports what changed.
//
// Exit status: 0 success, 2 bad input or usage (a file that is not a
// model, data of the wrong shape, an unknown flag...), 1 anything else.
package main

import (
	"github.com/ecprune/ecprune/analysis"
	"os"
	"runtime/debug"

	"github.com/ecprune/ecprune/onnxio"
)

func main() {
	// main only delegates, so that deferred clean-ups in run happen before
	// the process exits.
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// tuneGC sets the collector's growth from the size of a loaded network
// (analysis.GCPercent); an explicit GOGC in the environment is left
// alone. It reports whether the model counts as large (the default would
// leave more garbage than the analysis's slack).
func tuneGC(net *onnxio.Network) (large bool) {
	pct := analysis.GCPercent(net)
	if pct >= 100 {
		return false
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(pct)
	}
	return true
}
