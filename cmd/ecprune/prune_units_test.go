package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestPruneNeurons: prune --granularity neuron writes a smaller dense
// model whose report counts what went, byte-identical for the same seed;
// the default method beats magnitude on the calibration loss; bad
// combinations are usage errors.
func TestPruneNeurons(t *testing.T) {
	dir := t.TempDir()
	prune := func(method, out string, extra ...string) unitPruneReport {
		t.Helper()
		return pruneUnits(t, model("mnist_mlp_gemm.onnx"), out, method, "0.3", extra...)
	}
	a := prune("ec+", filepath.Join(dir, "a.onnx"))
	b := prune("ec+", filepath.Join(dir, "b.onnx"))
	if fileHash(t, filepath.Join(dir, "a.onnx")) != fileHash(t, filepath.Join(dir, "b.onnx")) {
		t.Error("same inputs gave different files")
	}
	if a.Removable != 400 || a.Removed != 120 {
		t.Errorf("removed %d of %d units, want 120 of 400", a.Removed, a.Removable)
	}
	kept := 0
	for _, g := range a.Groups {
		kept += g.Kept
	}
	if kept != 280 || len(a.Fixed) != 1 || !strings.Contains(a.Fixed[0], "graph output") {
		t.Errorf("kept %d units; not removable: %v", kept, a.Fixed)
	}
	if !(a.After.Bytes < a.Before.Bytes && a.After.Params < a.Before.Params && a.After.MACs < a.Before.MACs) || a.Before.MACs != 266200 {
		t.Errorf("before %+v after %+v", a.Before, a.After)
	}
	if *a.Calibration.Pruned.Loss != *b.Calibration.Pruned.Loss {
		t.Error("reports differ")
	}
	m := prune("magnitude", filepath.Join(dir, "m.onnx"))
	if *a.Calibration.Pruned.Loss >= *m.Calibration.Pruned.Loss {
		t.Errorf("ec+ loss %v, magnitude %v", *a.Calibration.Pruned.Loss, *m.Calibration.Pruned.Loss)
	}
	for _, bad := range [][]string{
		{"--method", "taylor"}, {"--nm", "2:4"}, {"--format", "constant"}, {"--granularity", "channel"}, {"--sparsity", "1"},
	} {
		args := append([]string{"prune", model("mnist_mlp_gemm.onnx"), "-o", filepath.Join(dir, "x.onnx"), "--calib", data("mnist_calib_x.npy"),
			"--granularity", "neuron", "-q"}, bad...)
		if code, _, stderr := runCLI(t, args...); code != exitBad {
			t.Errorf("%v: exit %d (%s), want %d", bad, code, stderr, exitBad)
		}
	}
}

// pruneUnits runs `prune --granularity neuron` on the MNIST calibration
// split with its labels and returns the JSON report.
func pruneUnits(t *testing.T, model, out, method, sparsity string, extra ...string) unitPruneReport {
	t.Helper()
	args := append([]string{"prune", model, "-o", out, "--calib", data("mnist_calib_x.npy"),
		"--labels", data("mnist_calib_y.npy"), "--granularity", "neuron", "--sparsity", sparsity, "--method", method, "--json", "-q"}, extra...)
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d: %s", method, code, stderr)
	}
	var r unitPruneReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	return r
}
