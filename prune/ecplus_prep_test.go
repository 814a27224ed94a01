package prune

import (
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// TestECPlusPrep: ec+ on what the statistics pass kept gives the same plan,
// bit for bit, as ec+ running its own pass, for classifiers and regression,
// with Collect's batches of another size than ec+'s; and the prep is
// declined when it cannot be used (probes).
func TestECPlusPrep(t *testing.T) {
	withLimits(t, 16, 1<<25, 5e7)
	cases := []struct {
		name string
		head onnxio.OpKind
		task analysis.Task
		opt  analysis.StatsOptions
		used bool
	}{
		{"classifier reverse", onnxio.OpLogSoftmax, analysis.TaskClassification, analysis.StatsOptions{Batch: 23}, true},
		{"regression forward", -1, analysis.TaskRegression, analysis.StatsOptions{Batch: 40, AD: analysis.ADForward}, true},
		{"probes", -1, analysis.TaskRegression, analysis.StatsOptions{Batch: 40, Probes: 2, Seed: 3}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			net := mlp(rng, []int{12, 20, 14, 6}, onnxio.OpTanh, c.head)
			data := randData(rng, 90, 12)
			eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2}

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
			if c.used {
				plansEqual(t, own, kept)
			}
		})
	}
}
