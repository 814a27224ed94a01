package ecplus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// Benchmarks of ec+'s cost against the one-shot EC analysis it starts
// from, on the bundled models (issue: ec+ at most 5x one-shot EC). Compare
// BenchmarkEC and BenchmarkECPlus of the same model with benchstat. With
// ECPRUNE_SHARED set, the full calibration splits are used (1000
// samples), else the 256-sample slices in testdata.
var benchModels = []struct{ name, model, data string }{
	{"pde", "pde_mlp.onnx", "pde_calib_x.npy"},
	{"mnist", "mnist_mlp_gemm.onnx", "mnist_calib_x.npy"},
}

func benchSetup(b testing.TB, model, data string) (*onnxio.Network, analysis.Data) {
	b.Helper()
	m, err := onnxio.Load(filepath.Join("..", "testdata", "models", model))
	if err != nil {
		b.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		b.Fatal(err)
	}
	in := net.Inputs[0]
	path := filepath.Join("..", "testdata", "data", data)
	if shared := os.Getenv("ECPRUNE_SHARED"); shared != "" {
		// The full calibration split (1000 samples) when it is at hand.
		ds, file, _ := strings.Cut(data, "_")
		path = filepath.Join(shared, "data", ds, file)
	}
	src, err := calib.Open([]string{path}, []calib.InputSpec{{Name: in.Name, Shape: in.Shape}}, calib.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	return net, calib.Data{Src: src}
}

// BenchmarkEC is the one-shot EC analysis: statistics, importances and
// bias shifts.
func BenchmarkEC(b *testing.B) {
	for _, bm := range benchModels {
		b.Run(bm.name, func(b *testing.B) {
			net, data := benchSetup(b, bm.model, bm.data)
			ec, _ := analysis.CriterionByName("ec")
			for b.Loop() {
				st, err := analysis.Collect(net, data, analysis.StatsOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ec.Score(st, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkECPlus is everything ec+ costs at 90% sparsity: the same
// analysis (keeping what ec+ reuses) plus ec+'s selection and refit.
func BenchmarkECPlus(b *testing.B) {
	for _, bm := range benchModels {
		b.Run(bm.name, func(b *testing.B) {
			net, data := benchSetup(b, bm.model, bm.data)
			ec, _ := analysis.CriterionByName("ec")
			task := analysis.TaskRegression
			if bm.name == "mnist" {
				task = analysis.TaskClassification
			}
			for b.Loop() {
				prep := NewPrep(net, data, task)
				st, err := analysis.Collect(net, data, analysis.StatsOptions{Observe: prep.Observe})
				if err != nil {
					b.Fatal(err)
				}
				sc, err := ec.Score(st, 0)
				if err != nil {
					b.Fatal(err)
				}
				eo := Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Prep: prep}
				if _, err := Prune(net, data, st, sc, prune.Options{Sparsity: 0.9}, eo, task, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
