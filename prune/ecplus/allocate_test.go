package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// TestNormaliseRho: ratios over their median, square-rooted, never below
// 1, at most rhoSpread; non-positive or NaN ratios count as cheap.
func TestNormaliseRho(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	cases := []struct {
		name string
		rho  map[int]float64
		want map[int]float64
	}{
		{"equal", map[int]float64{0: 3, 1: 3, 2: 3}, map[int]float64{0: 1, 1: 1, 2: 1}},
		{"one dear", map[int]float64{0: 1, 1: 2, 2: 8}, map[int]float64{0: 1, 1: 1, 2: 2}},
		{"even count: geometric median", map[int]float64{0: 1, 1: 4, 2: 16, 3: 64}, map[int]float64{0: 1, 1: 1, 2: math.Sqrt2, 3: 2 * math.Sqrt2}},
		{"clamped", map[int]float64{0: 1, 1: 1, 2: 1e6}, map[int]float64{0: 1, 1: 1, 2: rhoSpread}},
		{"negative and NaN are cheap", map[int]float64{0: -5, 1: nan, 2: 1, 3: 9, 4: 4}, map[int]float64{0: 1, 1: 1, 2: 1, 3: 1.5, 4: 1}},
		{"infinite is dearest", map[int]float64{0: 1, 1: inf, 2: 1}, map[int]float64{0: 1, 1: rhoSpread, 2: 1}},
		{"nothing measurable", map[int]float64{0: 0, 1: -1}, map[int]float64{0: 1, 1: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := normaliseRho(tc.rho)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for li, w := range tc.want {
				if math.Abs(got[li]-w) > 1e-12*w {
					t.Errorf("layer %d: %g, want %g (all: %v)", li, got[li], w, got)
				}
			}
		})
	}
}

// TestSecant: the mean of the scores ranked k-dk+1..k, NaN as zero and
// ranked last.
func TestSecant(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name  string
		score []float64
		k, dk int
		want  float64
	}{
		{"last one", []float64{5, 1, 3, 2}, 3, 1, 3},
		{"last two", []float64{5, 1, 3, 2}, 3, 2, 2.5},
		{"all", []float64{5, 1, 3, 2}, 4, 4, 2.75},
		{"nan counts zero", []float64{nan, 1, 3}, 3, 1, 0},
		{"ties", []float64{2, 2, 2, 2}, 3, 2, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := secant(tc.score, tc.k, tc.dk); got != tc.want {
				t.Errorf("secant = %g, want %g", got, tc.want)
			}
		})
	}
}

// TestProbeData: the probe's samples are whole batches from the start,
// at least one; the held-out ones follow, numbered from 0.
func TestProbeData(t *testing.T) {
	withLimits(t, 4, 1<<25, 5e7)
	x := make([]float64, 18*2)
	for q := range x {
		x[q] = float64(q / 2) // sample s holds s
	}
	data := memData{x: x, in: 2}
	cases := []struct {
		name      string
		d         analysis.Data
		wantStart []int
		wantFirst []float64 // first value of each batch
		wantLen   int
	}{
		{"head", headData{data: data, n: 8}, []int{0, 4}, []float64{0, 4}, 8},
		{"tail", tailData{data: data, from: 8, n: 4}, []int{0}, []float64{8}, 4},
		{"short tail", tailData{data: data, from: 16, n: 2}, []int{0}, []float64{16}, 2},
		{"small data: all", headData{data: memData{x: x[:6], in: 2}, n: probeSamples(3)}, []int{0}, []float64{0}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var starts []int
			var firsts []float64
			err := tc.d.Each(ecpBatch, func(b analysis.Batch) error {
				starts = append(starts, b.Start)
				firsts = append(firsts, b.Inputs[0].Data[0])
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(starts) != fmt.Sprint(tc.wantStart) || fmt.Sprint(firsts) != fmt.Sprint(tc.wantFirst) || tc.d.Len() != tc.wantLen {
				t.Errorf("starts %v, first values %v, len %d; want %v, %v, %d", starts, firsts, tc.d.Len(), tc.wantStart, tc.wantFirst, tc.wantLen)
			}
		})
	}
	if err := (headData{data: data, n: 6}).Each(4, func(analysis.Batch) error { return nil }); err == nil {
		t.Error("a batch across the probe's end: no error")
	}
}

// TestProbeSamples: a quarter of the samples rounded up to whole batches
// of ecpBatch, at least one batch, at most all.
func TestProbeSamples(t *testing.T) {
	withLimits(t, 4, 1<<25, 5e7)
	cases := []struct{ n, want int }{{1, 1}, {3, 3}, {4, 4}, {16, 4}, {17, 4}, {20, 8}, {40, 12}, {1000, 252}}
	for _, tc := range cases {
		if got := probeSamples(tc.n); got != tc.want {
			t.Errorf("probeSamples(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// coherentNet is a 6-24-24-3 tanh network whose 24 hidden units of the
// first layer carry nearly the same signal and whose second layer's
// weights are all small and positive: each weight alone is cheap for EC,
// but their removals add up coherently, so EC's one-shot global ranking
// empties the second layer.
func coherentNet(seed uint64) *onnxio.Network {
	rng := rand.New(rand.NewPCG(seed, seed))
	net := mlp(rng, []int{6, 24, 24, 3}, onnxio.OpTanh, -1)
	l0, l1 := net.Layers[0], net.Layers[1]
	for i := 1; i < l0.Out; i++ {
		for j := 0; j < l0.In; j++ {
			l0.W[i*l0.In+j] = l0.W[j] + 0.05*rng.NormFloat64()
		}
		l0.B[i] = l0.B[0]
	}
	for q := range l1.W {
		l1.W[q] = 0.05 + 0.02*rng.Float64()
	}
	return net
}

// TestRefinedBudgets: on networks where EC's one-shot ranking empties a
// layer, the refined budgets keep weights in it and the pruned network's
// output error on fresh samples is lower; the totals are the same; the
// result is deterministic; "" is one-shot; per-layer scope is unchanged.
func TestRefinedBudgets(t *testing.T) {
	withLimits(t, 64, 1<<25, 5e7)
	for _, seed := range []uint64{3, 6} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed+100, seed))
			net := coherentNet(seed)
			data := randData(rng, 512, 6)
			test := randData(rng, 512, 6)
			st := collect(t, net, data, analysis.StatsOptions{})
			sc := ecScores(t, st)
			opt := prune.Options{Sparsity: 0.8, Compensate: true}
			run := func(budgets string, opt prune.Options) (*prune.Plan, float64) {
				eo := DefaultOptions()
				eo.Budgets = budgets
				p, err := Prune(net, data, st, sc, opt, eo, analysis.TaskRegression, nil)
				if err != nil {
					t.Fatal(err)
				}
				q, err := analysis.Evaluate(prune.Apply(net, p), net, test, nil, analysis.TaskRegression, 64, nil)
				if err != nil {
					t.Fatal(err)
				}
				return p, *q.SqErr
			}
			one, oneErr := run(BudgetsOneShot, opt)
			ref, refErr := run(BudgetsRefined, opt)
			kept := func(p *prune.Plan) int { return len(p.Layers[1].Pruned) - p.Layers[1].Removed }
			t.Logf("second layer keeps %d (one-shot), %d (refined); output error on fresh samples %.4g, %.4g", kept(one), kept(ref), oneErr, refErr)
			if kept(one) != 0 {
				t.Fatalf("one-shot keeps %d weights of the second layer: the network does not show the problem", kept(one))
			}
			if kept(ref) == 0 {
				t.Error("refined budgets empty the second layer too")
			}
			if !(refErr < oneErr) {
				t.Errorf("output error %g refined, %g one-shot: want lower", refErr, oneErr)
			}
			if one.Removed != ref.Removed {
				t.Errorf("removed %d refined, %d one-shot: want the same total", ref.Removed, one.Removed)
			}
			again, _ := run(BudgetsRefined, opt)
			plansEqual(t, ref, again)
			dflt, _ := run("", opt)
			plansEqual(t, one, dflt)
			opt.Scope = prune.Layer
			layerOne, _ := run(BudgetsOneShot, opt)
			layerRef, _ := run(BudgetsRefined, opt)
			plansEqual(t, layerOne, layerRef)
		})
	}
}

// TestMovableLayers: only layers of the global ranking that lose weights
// may have their budgets moved.
func TestMovableLayers(t *testing.T) {
	net := mlp(rand.New(rand.NewPCG(1, 1)), []int{3, 4, 4, 4, 2}, onnxio.OpRelu, -1)
	sc := &analysis.Scores{}
	for _, l := range net.Layers {
		sc.Layers = append(sc.Layers, &analysis.LayerScores{Layer: l, Score: make([]float64, l.Params())})
	}
	local := &analysis.Scores{Layers: sc.Layers, Local: map[*onnxio.Layer]string{net.Layers[2]: "test"}}
	cases := []struct {
		name string
		sc   *analysis.Scores
		opt  prune.Options
		ks   []int
		want []int
	}{
		{"global", sc, prune.Options{Sparsity: 0.5}, []int{6, 8, 8, 4}, []int{0, 1, 2, 3}},
		{"per layer", sc, prune.Options{Sparsity: 0.5, Scope: prune.Layer}, []int{6, 8, 8, 4}, nil},
		{"N:M", sc, prune.Options{NM: &prune.NM{N: 2, M: 4}}, []int{6, 8, 8, 4}, nil},
		{"skipped or untouched", sc, prune.Options{Sparsity: 0.5, Skip: []string{"W1"}}, []int{6, 0, 8, 0}, []int{0, 2}},
		{"own sparsity", sc, prune.Options{Sparsity: 0.5, LayerSparsity: map[string]float64{"W3": 0.5}}, []int{6, 8, 8, 4}, []int{0, 1, 2}},
		{"local scores", local, prune.Options{Sparsity: 0.5}, []int{6, 8, 8, 4}, []int{0, 1, 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := movableLayers(net, tc.sc, tc.opt, tc.ks); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("movable %v, want %v", got, tc.want)
			}
		})
	}
}
