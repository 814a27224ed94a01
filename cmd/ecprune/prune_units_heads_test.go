package main

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// TestPruneNeuronsViT: prune --granularity neuron on the bundled ViT with
// --scope layer removes half of every block's FFN units and half of its
// attention heads; the report counts heads, the file shrinks, ONNX
// Runtime runs it with ecprune's outputs, and the default method's
// calibration loss is below the magnitude and Wanda-style baselines'.
func TestPruneNeuronsViT(t *testing.T) {
	vit := filepath.Join(sharedDir(t), "models", "mnist_vit.onnx")
	dir := t.TempDir()
	prune := func(method string, extra ...string) unitPruneReport {
		t.Helper()
		return pruneUnits(t, vit, filepath.Join(dir, method+".onnx"), method, "0.5", extra...)
	}
	a := prune("ec+", "--scope", "layer")
	if a.Removable != 384 || a.Removed != 192 {
		t.Errorf("removed %d of %d units, want 192 of 384 (2 FFNs of 128, 2 attention blocks of 4 heads of 16)", a.Removed, a.Removable)
	}
	heads := 0
	for _, g := range a.Groups {
		if g.Heads > 0 {
			heads++
			if g.Heads != 4 || g.KeptHeads != 2 || g.Kept != 32 || g.Units != 64 {
				t.Errorf("%s: kept %d of %d heads, %d of %d units", g.Layer, g.KeptHeads, g.Heads, g.Kept, g.Units)
			}
		}
	}
	if heads != 2 {
		t.Errorf("%d attention blocks in the report, want 2", heads)
	}
	if !(a.After.Bytes < a.Before.Bytes && a.After.Params < a.Before.Params && a.After.MACs < a.Before.MACs) {
		t.Errorf("before %+v after %+v", a.Before, a.After)
	}
	for _, base := range []string{"magnitude", "wanda"} {
		b := prune(base, "--scope", "layer")
		if *a.Calibration.Pruned.Loss >= *b.Calibration.Pruned.Loss {
			t.Errorf("ec+ loss %v, %s %v", *a.Calibration.Pruned.Loss, base, *b.Calibration.Pruned.Loss)
		}
	}
	if err := ort.Init(); err != nil {
		t.Skipf("ONNX Runtime: %v", err)
	}
	out := filepath.Join(dir, "ec+.onnx")
	net, b, res := ortRun(t, out, data("mnist_calib_x.npy"), 64)
	x := analysis.NewTensor(b.Shapes[0], b.Inputs[0])
	tr, err := analysis.Run(net, []*analysis.Tensor{x})
	if err != nil {
		t.Fatal(err)
	}
	got := res[net.Values[net.Outputs[0]].Name].Data
	for q, want := range tr.Outputs()[0].Data {
		if math.Abs(got[q]-want) > 1e-5*math.Max(1, math.Abs(want)) {
			t.Fatalf("output %d: ONNX Runtime %v, ecprune %v", q, got[q], want)
		}
	}
}

// TestPruneNeuronsGlobalHeads: with the global ranking every attention
// block loses its share of heads (1 of 4 at 30%, 2 of 4 at 50%) while the
// FFN units are ranked together, and ec+'s calibration loss is below the
// baselines'; --cost-weighted removes as many units of LeNet-300-100 as
// the default and leaves fewer multiply-adds.
func TestPruneNeuronsGlobalHeads(t *testing.T) {
	vit := filepath.Join(sharedDir(t), "models", "mnist_vit.onnx")
	dir := t.TempDir()
	prune := func(model, method, sparsity string, extra ...string) unitPruneReport {
		t.Helper()
		return pruneUnits(t, model, filepath.Join(dir, method+sparsity+".onnx"), method, sparsity, extra...)
	}
	for _, c := range []struct {
		sparsity string
		kept     int
	}{{"0.3", 3}, {"0.5", 2}} {
		t.Run(c.sparsity, func(t *testing.T) {
			a := prune(vit, "ec+", c.sparsity)
			for _, g := range a.Groups {
				if g.Heads > 0 && g.KeptHeads != c.kept {
					t.Errorf("%s: kept %d of %d heads, want %d", g.Layer, g.KeptHeads, g.Heads, c.kept)
				}
			}
			for _, base := range []string{"magnitude", "wanda"} {
				b := prune(vit, base, c.sparsity)
				if *a.Calibration.Pruned.Loss >= *b.Calibration.Pruned.Loss {
					t.Errorf("ec+ loss %v, %s %v", *a.Calibration.Pruned.Loss, base, *b.Calibration.Pruned.Loss)
				}
			}
		})
	}
	lenet := model("mnist_mlp_gemm.onnx")
	d, w := prune(lenet, "ec+", "0.5"), prune(lenet, "ec+", "0.5", "--cost-weighted")
	if w.Removed != d.Removed || w.After.MACs >= d.After.MACs {
		t.Errorf("--cost-weighted removed %d units leaving %d multiply-adds; default %d leaving %d", w.Removed, w.After.MACs, d.Removed, d.After.MACs)
	}
}
