// Command ecprune prunes the fully-connected layers of ONNX models with
// elimination-compensation pruning and reports what changed.
//
// Exit status: 0 success, 2 bad input or usage (a file that is not a
// model, data of the wrong shape, an unknown flag...), 1 anything else.
package main

import (
	"os"
)

func main() {
	// main only delegates, so that deferred clean-ups in run happen before
	// the process exits.
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
