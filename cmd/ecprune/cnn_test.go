package main

import (
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/testmodels/checker"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// TestPruneCNN: the bundled LeNet-5 (Conv, MaxPool and a shape subgraph
// in front of three Gemm layers) prunes with the default method and with
// ec in both differentiation modes; ORT runs the output and agrees with
// the evaluator, and the evaluator agrees with ORT on the original.
func TestPruneCNN(t *testing.T) {
	ort.Require(t)
	compareORT(t, model("mnist_cnn.onnx"), data("mnist_calib_x.npy"), 64, 1e-5)
	for _, args := range [][]string{
		{"--method", "ec+"},
		{"--method", "ec"},
		{"--method", "ec", "--ad", "forward"},
		{"--method", "ec", "--ad", "reverse"},
	} {
		t.Run(args[1]+"/"+args[len(args)-1], func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "pruned.onnx")
			a := append([]string{"prune", "--quiet", model("mnist_cnn.onnx"), "-o", out, "--calib", data("mnist_calib_x.npy"),
				"--sparsity", "0.5", "--limit", "128"}, args...)
			if code, _, stderr := runCLI(t, a...); code != 0 {
				t.Fatalf("prune failed: %s", stderr)
			}
			checker.Check(t, out, true)
			compareORT(t, out, data("mnist_calib_x.npy"), 64, 1e-5)
		})
	}
}
