package main

import (
	"encoding/json"
	"os"
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

// TestPruneViT: the bundled small ViT (patch embedding, two pre-norm
// attention blocks with decomposed LayerNorm, softmax attention, GELU and
// residual adds, a cls-token head) prunes label-free with the default
// method at 50% global: every one of its ten dense layers is pruned, the
// test accuracy on the bundled test slice stays within two points of the
// dense model's, and ORT (where present) runs the output and agrees with
// the evaluator. Few calibration samples keep it quick.
func TestPruneViT(t *testing.T) {
	vit := model("mnist_vit.onnx")
	accuracy := func(path string) float64 {
		t.Helper()
		code, stdout, stderr := runCLI(t, "eval", path, "--data", data("mnist_test_x.npy"), "--labels", data("mnist_test_y.npy"), "--json", "-q")
		if code != 0 {
			t.Fatalf("eval %s failed: %s", filepath.Base(path), stderr)
		}
		var r struct {
			Quality struct {
				Samples  int     `json:"samples"`
				Accuracy float64 `json:"accuracy"`
			} `json:"quality"`
		}
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("eval %s: %v", filepath.Base(path), err)
		}
		if r.Quality.Samples != 256 {
			t.Fatalf("eval %s: %d test samples, want 256", filepath.Base(path), r.Quality.Samples)
		}
		return r.Quality.Accuracy
	}
	out := filepath.Join(t.TempDir(), "pruned.onnx")
	report := filepath.Join(t.TempDir(), "report.json")
	if code, _, stderr := runCLI(t, "prune", "--quiet", vit, "-o", out, "--calib", data("mnist_calib_x.npy"),
		"--sparsity", "0.5", "--limit", "48", "--report", report); code != 0 {
		t.Fatalf("prune failed: %s", stderr)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Method   string `json:"method"`
		Removed  int    `json:"removed"`
		Prunable int    `json:"prunable"`
		Layers   []struct {
			Name     string `json:"name"`
			Params   int    `json:"params"`
			Nonzeros int    `json:"nonzeros"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Method != "ec+" || rep.Prunable != 69312 || rep.Removed != rep.Prunable/2 {
		t.Fatalf("method %q removed %d of %d prunable weights, want ec+ removing 34656 of 69312", rep.Method, rep.Removed, rep.Prunable)
	}
	if len(rep.Layers) != 10 {
		t.Fatalf("%d layers in the report, want the ViT's 10 dense layers", len(rep.Layers))
	}
	for _, l := range rep.Layers {
		if l.Nonzeros >= l.Params {
			t.Errorf("layer %s kept all %d weights", l.Name, l.Params)
		}
	}
	dense, pruned := accuracy(vit), accuracy(out)
	if pruned < dense-0.02 {
		t.Errorf("test accuracy %.4f after pruning 50%%, dense %.4f", pruned, dense)
	}
	if ort.Init() == nil {
		compareORT(t, vit, data("mnist_calib_x.npy"), 32, 1e-5)
		compareORT(t, out, data("mnist_calib_x.npy"), 32, 1e-5)
	}
}
