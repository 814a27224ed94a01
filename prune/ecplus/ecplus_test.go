package ecplus

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// TestDefaultOptions checks the recommended setting and that validation
// names the field at fault.
func TestDefaultOptions(t *testing.T) {
	d := DefaultOptions()
	if !reflect.DeepEqual(d, Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Recon: ReconAuto, ReconDamp: 0.01, Budgets: BudgetsOneShot}) {
		t.Errorf("defaults %+v", d)
	}
	if err := d.validate(); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
	cases := []struct {
		field string
		edit  func(o *Options)
	}{
		{"Lambda", func(o *Options) { o.Lambda = -1 }},
		{"Lambda", func(o *Options) { o.Lambda = math.Inf(1) }},
		{"C", func(o *Options) { o.C = math.NaN() }},
		{"Rounds", func(o *Options) { o.Rounds = 0 }},
		{"RefitSteps", func(o *Options) { o.RefitSteps = -1 }},
		{"Recon", func(o *Options) { o.Recon = "maybe" }},
		{"ReconDamp", func(o *Options) { o.ReconDamp = -0.1 }},
		{"Budgets", func(o *Options) { o.Budgets = "greedy" }},
	}
	for _, tc := range cases {
		o := DefaultOptions()
		tc.edit(&o)
		var oe *prune.OptionError
		if err := o.validate(); !errors.As(err, &oe) || oe.Field != tc.field || !strings.HasPrefix(err.Error(), tc.field+" ") {
			t.Errorf("%+v: error %v, want one about %s", o, err, tc.field)
		}
	}
}

// TestECPlusPlan runs the whole method: budgets from the EC scores,
// consistent plans, determinism, and no change at zero sparsity.
func TestECPlusPlan(t *testing.T) {
	cases := []struct {
		name  string
		opt   prune.Options
		stats analysis.StatsOptions
		mem   int
		task  analysis.Task
		recon string // "": ReconOff, so that kept weights stay as they were
	}{
		{"global", prune.Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"global streamed", prune.Options{Sparsity: 0.7}, analysis.StatsOptions{}, 10, analysis.TaskRegression, ""},
		{"per layer", prune.Options{Sparsity: 0.5, Scope: prune.Layer}, analysis.StatsOptions{}, 1 << 25, analysis.TaskClassification, ""},
		{"skip and fixed", prune.Options{Sparsity: 0.6, Skip: []string{"W2"}, LayerSparsity: map[string]float64{"W0": 0.25}}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"forward mode", prune.Options{Sparsity: 0.8}, analysis.StatsOptions{AD: analysis.ADForward}, 1 << 25, analysis.TaskRegression, ""},
		{"probes", prune.Options{Sparsity: 0.8}, analysis.StatsOptions{Probes: 2}, 1 << 25, analysis.TaskClassification, ""},
		{"probes streamed", prune.Options{Sparsity: 0.8}, analysis.StatsOptions{Probes: 2}, 10, analysis.TaskClassification, ""},
		{"zero sparsity", prune.Options{Sparsity: 0}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"reconstruction", prune.Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ReconOn},
		{"reconstruction where it helps", prune.Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, TaskAuto, ReconAuto},
		{"reconstruction, streamed", prune.Options{Sparsity: 0.7}, analysis.StatsOptions{}, 10, analysis.TaskRegression, ReconOn},
	}
	for k, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 10, tc.mem, 5e7)
			rng := rand.New(rand.NewPCG(uint64(k), 77))
			net := mlp(rng, []int{5, 7, 6, 4}, onnxio.OpTanh, -1, 1)
			data := randData(rng, 31, 5)
			st := collect(t, net, data, tc.stats)
			sc := ecScores(t, st)
			recon := tc.recon
			if recon == "" {
				recon = ReconOff
			}
			eo := Options{Lambda: 1, C: 0.5, Rounds: 3, RefitSteps: 2, Recon: recon, ReconDamp: 0.01}
			budget, err := prune.Select(net, sc, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := Prune(net, data, st, sc, tc.opt, eo, tc.task, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Removed != budget.Removed || plan.Total != budget.Total {
				t.Errorf("removed %d of %d, budget %d of %d", plan.Removed, plan.Total, budget.Removed, budget.Total)
			}
			for li, lp := range plan.Layers {
				l := net.Layers[li]
				if lp.Layer != l || lp.Removed != budget.Layers[li].Removed {
					t.Errorf("layer %d: removed %d, budget %d", li, lp.Removed, budget.Layers[li].Removed)
				}
				n := 0
				for q, p := range lp.Pruned {
					if p {
						n++
						if lp.W[q] != 0 {
							t.Errorf("layer %d: pruned weight %d is %g", li, q, lp.W[q])
						}
					} else if lp.W[q] != l.W[q] && recon == ReconOff {
						t.Errorf("layer %d: kept weight %d changed", li, q)
					}
				}
				if n != lp.Removed || len(lp.B) != l.Out || len(lp.BiasShift) != l.Out {
					t.Errorf("layer %d: %d marked, %d removed, %d biases, %d shifts", li, n, lp.Removed, len(lp.B), len(lp.BiasShift))
				}
				for i := range lp.B {
					old := 0.0
					if l.B != nil {
						old = l.B[i]
					}
					if lp.B[i]-old != lp.BiasShift[i] {
						t.Errorf("layer %d: bias shift %g, but bias went from %g to %g", li, lp.BiasShift[i], old, lp.B[i])
					}
					if tc.opt.Sparsity == 0 && lp.BiasShift[i] != 0 {
						t.Errorf("layer %d: bias shift %g at zero sparsity", li, lp.BiasShift[i])
					}
				}
			}
			if net.Layers[1].B != nil {
				t.Error("the original network was modified")
			}
			again, err := Prune(net, data, st, sc, tc.opt, eo, tc.task, nil)
			if err != nil {
				t.Fatal(err)
			}
			plansEqual(t, plan, again)
		})
	}
}

// TestECPlusThreads: the plan does not depend on the number of CPUs the
// parallel products run on.
func TestECPlusThreads(t *testing.T) {
	withLimits(t, 64, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(12, 12))
	net := mlp(rng, []int{90, 140, 70, 10}, onnxio.OpRelu, -1)
	data := randData(rng, 150, 90)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	eo := Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2}
	var plans []*prune.Plan
	for _, procs := range []int{1, 4} {
		old := runtime.GOMAXPROCS(procs)
		plan, err := Prune(net, data, st, sc, prune.Options{Sparsity: 0.8}, eo, analysis.TaskClassification, nil)
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, plan)
	}
	plansEqual(t, plans[0], plans[1])
}

// TestECPlusBeatsEC: on a small network, the pruned outputs are closer to
// the original's than one-shot EC's at the same budget.
func TestECPlusBeatsEC(t *testing.T) {
	withLimits(t, 16, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(8, 8))
	net := mlp(rng, []int{6, 16, 12, 3}, onnxio.OpTanh, -1)
	data := randData(rng, 80, 6)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	opt := prune.Options{Sparsity: 0.7, Compensate: true}
	ecPlan, err := prune.Select(net, sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	plus, err := Prune(net, data, st, sc, opt, Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2}, analysis.TaskRegression, nil)
	if err != nil {
		t.Fatal(err)
	}
	errOf := func(p *prune.Plan) float64 {
		q, err := analysis.Evaluate(prune.Apply(net, p), net, data, nil, analysis.TaskRegression, 32, nil)
		if err != nil {
			t.Fatal(err)
		}
		return *q.SqErr
	}
	if a, b := errOf(plus), errOf(ecPlan); !(a < b) {
		t.Errorf("ec+ output error %g, ec %g: want ec+ lower", a, b)
	}
}

// TestECPlusErrors covers bad options and inputs.
func TestECPlusErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	net := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	data := randData(rng, 10, 3)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	good := Options{Lambda: 1, C: 0.5, Rounds: 2, RefitSteps: 1}
	other := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	cases := []struct {
		name   string
		net    *onnxio.Network
		sc     *analysis.Scores
		opt    prune.Options
		eo     Options
		option bool // an *prune.OptionError
	}{
		{"negative lambda", net, sc, prune.Options{Sparsity: 0.5}, Options{Lambda: -1, C: 0.5, Rounds: 1}, true},
		{"nan c", net, sc, prune.Options{Sparsity: 0.5}, Options{Lambda: 1, C: math.NaN(), Rounds: 1}, true},
		{"no rounds", net, sc, prune.Options{Sparsity: 0.5}, Options{Lambda: 1, C: 0.5}, true},
		{"negative refit", net, sc, prune.Options{Sparsity: 0.5}, Options{Lambda: 1, C: 0.5, Rounds: 1, RefitSteps: -1}, true},
		{"nm", net, sc, prune.Options{NM: &prune.NM{N: 2, M: 4}}, good, true},
		{"bad sparsity", net, sc, prune.Options{Sparsity: 1.5}, good, true},
		{"scores of another network", other, sc, prune.Options{Sparsity: 0.5}, good, false},
		{"no scores", net, nil, prune.Options{Sparsity: 0.5}, good, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Prune(tc.net, data, st, tc.sc, tc.opt, tc.eo, analysis.TaskRegression, nil)
			if err == nil {
				t.Fatal("no error")
			}
			var oe *prune.OptionError
			if errors.As(err, &oe) != tc.option {
				t.Errorf("error %v: option error %v, want %v", err, !tc.option, tc.option)
			}
		})
	}
}

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
			eo := Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Seed: c.opt.Seed}

			st := collect(t, net, data, c.opt)
			own, err := Prune(net, data, st, ecScores(t, st), prune.Options{Sparsity: 0.7}, eo, c.task, nil)
			if err != nil {
				t.Fatal(err)
			}
			prep := NewPrep(net, data, c.task)
			opt := c.opt
			opt.Observe = prep.Observe
			st2 := collect(t, net, data, opt)
			eo.Prep = prep
			var logged []string
			kept, err := Prune(net, data, st2, ecScores(t, st2), prune.Options{Sparsity: 0.7}, eo, c.task, func(f string, a ...any) { logged = append(logged, f) })
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
			if c.used && c.same {
				// A sweep runs ec+ again on the same Prep: the first run
				// must have left it whole.
				eo.Prep = nil
				fresh, err := Prune(net, data, st, ecScores(t, st), prune.Options{Sparsity: 0.5}, eo, c.task, nil)
				if err != nil {
					t.Fatal(err)
				}
				eo.Prep = prep
				again, err := Prune(net, data, st2, ecScores(t, st2), prune.Options{Sparsity: 0.5}, eo, c.task, nil)
				if err != nil {
					t.Fatal(err)
				}
				plansEqual(t, fresh, again)
			}
		})
	}
}
