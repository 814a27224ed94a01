package prune

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
)

// TestTiedECPlus: ec+ on a tied weight keeps the tie: every reader's
// pruned weights are the same stored tensor (the one-shot selection over
// the tie, counted once), the embedding lookups read it pruned, and the
// refitted biases do not make the output worse than EC's one-shot plan.
func TestTiedECPlus(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 5))
	net := tiedNet(t, rng)
	tie := net.Ties[0]
	const n = 48
	d := tiedData{}
	for s := 0; s < n; s++ {
		for j := 0; j < 4; j++ {
			d.x = append(d.x, rng.NormFloat64()+float64(j))
		}
		for j := 0; j < 5; j++ {
			d.h = append(d.h, rng.NormFloat64()*0.5-0.3)
		}
		for j := 0; j < 3; j++ {
			d.ids = append(d.ids, float64(rng.IntN(5)))
		}
	}
	inputs := []*analysis.Tensor{analysis.NewTensor([]int{n, 4}, d.x), analysis.NewTensor([]int{n, 5}, d.h), analysis.NewTensor([]int{n, 3}, d.ids)}
	base, err := analysis.Run(net, inputs)
	if err != nil {
		t.Fatal(err)
	}
	mse := func(plan *Plan) float64 {
		tr, err := analysis.Run(Apply(net, plan), inputs)
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		for o, y := range tr.Outputs() {
			for q, v := range y.Data {
				dv := v - base.Outputs()[o].Data[q]
				s += dv * dv
			}
		}
		return s / n
	}
	st, err := analysis.Collect(net, d, analysis.StatsOptions{Batch: 16})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := analysis.CriterionByName("ec")
	sc, err := c.Score(st, 1)
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{Sparsity: 0.5, Scope: Layer, Compensate: true}
	ec, err := Select(net, sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Recon: ReconAuto, ReconDamp: 0.01}
	plus, err := ECPlus(net, d, st, sc, opt, eo, analysis.TaskRegression, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	for li, lp := range plus.Layers {
		if !slices.Equal(lp.Pruned, ec.Layers[li].Pruned) {
			t.Errorf("layer %s: ec+ changed the tie's one-shot selection", lp.Layer.Node)
		}
	}
	for _, plan := range []*Plan{ec, plus} {
		if plan.Total != tie.Size() || plan.Removed != Count(0.5, tie.Size()) {
			t.Errorf("plan removes %d of %d, want %d of %d (the tie once)", plan.Removed, plan.Total, Count(0.5, tie.Size()), tie.Size())
		}
		stored := make([]float64, tie.Size())
		for k := range stored {
			stored[k] = math.NaN()
		}
		for _, lp := range plan.Layers {
			l := lp.Layer
			for q, w := range lp.W {
				k := l.StoredIndex(q)
				if lp.Pruned[q] != (w == 0) {
					t.Errorf("layer %s: W[%d] = %g, pruned %v", l.Node, q, w, lp.Pruned[q])
				}
				if !math.IsNaN(stored[k]) && stored[k] != w/l.Alpha {
					t.Fatalf("layer %s: stored element %d is %g, another reader has %g: the tie is broken", l.Node, k, w/l.Alpha, stored[k])
				}
				stored[k] = w / l.Alpha
			}
		}
		// The lookups read the pruned tensor: outG = 3 E[ids].
		tr, err := analysis.Run(Apply(net, plan), inputs)
		if err != nil {
			t.Fatal(err)
		}
		outG := tr.Outputs()[2].Data
		for p, id := range d.ids {
			for dd := 0; dd < 4; dd++ {
				if want := 3 * float64(float32(stored[int(id)*4+dd])); math.Abs(outG[p*4+dd]-want) > 1e-6 {
					t.Fatalf("lookup %d, element %d: %g, want %g", p, dd, outG[p*4+dd], want)
				}
			}
		}
	}
	if e, p := mse(ec), mse(plus); !(p <= e*(1+1e-9)) {
		t.Errorf("ec+ output error %g, above EC's one-shot %g", p, e)
	}
}
