package prune

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// TestECPlusPrep: ec+ on what the statistics pass kept gives the same plan,
// bit for bit, as ec+ running its own pass, for classifiers and regression,
// with Collect's batches of another size than ec+'s; with probes too,
// when ec+ draws its own with the statistics' seed and batch size; and the
// prep is declined when it cannot be used (the loss objective).
func TestECPlusPrep(t *testing.T) {
	withLimits(t, 16, 1<<25, 5e7)
	cases := []struct {
		name string
		head onnxio.OpKind
		task analysis.Task
		opt  analysis.StatsOptions
		used bool
		same bool // bit-identical plans (else close)
	}{
		{"classifier reverse", onnxio.OpLogSoftmax, analysis.TaskClassification, analysis.StatsOptions{Batch: 23}, true, true},
		{"regression forward", -1, analysis.TaskRegression, analysis.StatsOptions{Batch: 40, AD: analysis.ADForward}, true, true},
		// Collect's forward pass runs in float32 with probes: z0 differs
		// from ec+'s float64 pass by rounding, hence close, not equal.
		{"probes", -1, analysis.TaskRegression, analysis.StatsOptions{Batch: 16, Probes: 2, Seed: 3}, true, false},
		{"loss", -1, analysis.TaskRegression, analysis.StatsOptions{Batch: 40, Objective: analysis.ObjLoss, Task: analysis.TaskRegression, Labels: &analysis.Labels{Target: make([]float64, 90*6), Width: 6}}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			net := mlp(rng, []int{12, 20, 14, 6}, onnxio.OpTanh, c.head)
			data := randData(rng, 90, 12)
			eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Seed: c.opt.Seed}

			st := collect(t, net, data, c.opt)
			own, err := ECPlus(net, data, st, ecScores(t, st), Options{Sparsity: 0.7}, eo, c.task, nil)
			if err != nil {
				t.Fatal(err)
			}
			prep := NewECPlusPrep(net, data, c.task)
			opt := c.opt
			opt.Observe = prep.Observe
			st2 := collect(t, net, data, opt)
			eo.Prep = prep
			var logged []string
			kept, err := ECPlus(net, data, st2, ecScores(t, st2), Options{Sparsity: 0.7}, eo, c.task, func(f string, a ...any) { logged = append(logged, f) })
			if err != nil {
				t.Fatal(err)
			}
			used := false
			for _, l := range logged {
				used = used || l == "ec+: g of the original network kept from the statistics pass"
			}
			if used != c.used {
				t.Fatalf("prep used: %v, want %v", used, c.used)
			}
			switch {
			case c.used && c.same:
				plansEqual(t, own, kept)
			case c.used:
				plansClose(t, own, kept, 0.01, 1e-5)
			}
		})
	}
}

// plansClose checks that two plans remove the same number of weights,
// disagree on at most a fraction diff of them, and set biases within tol
// (relative to the largest bias).
func plansClose(t *testing.T, a, b *Plan, diff, tol float64) {
	t.Helper()
	if a.Removed != b.Removed || a.Total != b.Total || len(a.Layers) != len(b.Layers) {
		t.Fatalf("plans differ: removed %d/%d, total %d/%d", a.Removed, b.Removed, a.Total, b.Total)
	}
	differ := 0
	var bmax, dmax float64
	for li := range a.Layers {
		x, y := a.Layers[li], b.Layers[li]
		for q := range x.Pruned {
			if x.Pruned[q] != y.Pruned[q] {
				differ++
			}
		}
		for i := range x.B {
			bmax = math.Max(bmax, math.Abs(x.B[i]))
			dmax = math.Max(dmax, math.Abs(x.B[i]-y.B[i]))
		}
	}
	if float64(differ) > diff*float64(a.Removed) {
		t.Errorf("%d of %d removals differ", differ, a.Removed)
	}
	if dmax > tol*bmax {
		t.Errorf("biases differ by up to %.3g (largest %.3g)", dmax, bmax)
	}
}
