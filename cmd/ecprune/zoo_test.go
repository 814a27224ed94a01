package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/checker"
	"github.com/ecprune/ecprune/testmodels/ort"
	"github.com/ecprune/ecprune/testmodels/zoo"
)

// TestZooPrune is issue 14's acceptance for pruning: every model of the zoo
// (testmodels/zoo) pruned with every dense layer at 50% (`--scope layer
// --sparsity 0.5`) gives a file that the ONNX checker accepts, that ONNX
// Runtime runs with the outputs of ecprune's own evaluation of that file
// (1e-5, relative to each output's largest value), and in which every
// nn.Linear weight is at 50% density, to one weight. Gated on
// ECPRUNE_ZOO=1; it ends with one line per model saying what stops it.
func TestZooPrune(t *testing.T) {
	if testing.Short() {
		t.Skip("prunes every model of the zoo")
	}
	ort.Require(t)
	checker.Require(t)
	entries, err := zoo.List()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	pass := 0
	for _, e := range entries {
		var problems []string
		t.Run(e.Name, func(t *testing.T) { problems = pruneZooModel(t, e) })
		verdict := "FAIL"
		if len(problems) == 0 {
			verdict = "ok"
			pass++
		}
		lines = append(lines, fmt.Sprintf("%-26s %-4s %s", e.Name, verdict, strings.Join(problems, "; ")))
	}
	t.Logf("zoo: %d of %d models prune to a valid file at 50%% per layer\n%s", pass, len(entries), strings.Join(lines, "\n"))
}

// pruneZooModel prunes one model and checks the file; it returns what
// failed, briefly, for the summary.
func pruneZooModel(t *testing.T, e zoo.Entry) (problems []string) {
	fail := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		t.Error(msg)
		problems = append(problems, msg)
	}
	path, x, err := zoo.Load(e)
	if err != nil {
		fail("load: %v", err)
		return problems
	}
	calibPath, err := zoo.CalibPath(e)
	if err != nil {
		fail("%v", err)
		return problems
	}
	out := filepath.Join(t.TempDir(), "pruned.onnx")
	code, _, stderr := runCLI(t, "prune", "--quiet", path, "-o", out, "--calib", calibPath, "--scope", "layer", "--sparsity", "0.5")
	if code != 0 {
		t.Logf("ecprune prune: exit %d\n%s", code, stderr)
		first, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
		first = strings.ReplaceAll(first, path, e.File)
		fail("prune exit %d: %s", code, first)
		return problems
	}
	if err := checker.CheckErr(out, true); err != nil {
		fail("checker: %v", err)
	}

	m, err := onnxio.Load(out)
	if err != nil {
		fail("onnxio.Load of the pruned file: %v", err)
		return problems
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		fail("onnxio.Extract of the pruned file: %v", err)
		return problems
	}
	if worst, err := zoo.Evaluate(net, out, x); err != nil {
		fail("pruned file: %v", err)
	} else if worst > 1e-5 {
		fail("pruned file: evaluator vs ORT error %.3g > 1e-05", worst)
	} else {
		t.Logf("pruned file: evaluator vs ORT error %.2g", worst)
	}

	// Density, read from the file: every copy of a weight that a dense op
	// reads.
	var off []string
	for _, w := range e.Weights {
		for _, tt := range w.Tensors {
			if !tt.Dense() {
				continue
			}
			nnz, size, err := tensorNonZeros(m, tt.Name)
			if err != nil {
				fail("%s: %v", w.Module, err)
				continue
			}
			if size != w.Out*w.In {
				fail("%s: tensor %s has %d values, want %d", w.Module, tt.Name, size, w.Out*w.In)
				continue
			}
			if d := 2*nnz - size; d < -2 || d > 2 {
				off = append(off, fmt.Sprintf("%s %.3f", w.Module, float64(nnz)/float64(size)))
			}
		}
	}
	if len(off) > 0 {
		fail("density not 0.5: %s", strings.Join(off, ", "))
	}
	return problems
}

// tensorNonZeros counts the non-zero values of the named weight in the
// file, wherever the pruned file stores it: a dense or sparse initializer,
// or a Constant node's value or sparse_value.
func tensorNonZeros(m *onnxio.Model, name string) (nnz, size int, err error) {
	count := func(vals []float64) int {
		n := 0
		for _, v := range vals {
			if v != 0 {
				n++
			}
		}
		return n
	}
	g := m.Proto.GetGraph()
	for _, t := range g.GetInitializer() {
		if t.GetName() == name {
			vals, err := m.Floats(t)
			return count(vals), len(vals), err
		}
	}
	for _, s := range g.GetSparseInitializer() {
		if s.GetValues().GetName() == name {
			vals, err := m.Floats(s.GetValues())
			return count(vals), int(onnxio.NumElements(s.GetDims())), err
		}
	}
	for _, n := range g.GetNode() {
		if n.GetOpType() != "Constant" || len(n.GetOutput()) != 1 || n.GetOutput()[0] != name {
			continue
		}
		if a := onnxio.Attr(n, "sparse_value"); a != nil {
			s := a.GetSparseTensor()
			vals, err := m.Floats(s.GetValues())
			return count(vals), int(onnxio.NumElements(s.GetDims())), err
		}
		if a := onnxio.Attr(n, "value"); a != nil {
			vals, err := m.Floats(a.GetT())
			return count(vals), len(vals), err
		}
	}
	return 0, 0, fmt.Errorf("no tensor %q in the pruned file", name)
}
