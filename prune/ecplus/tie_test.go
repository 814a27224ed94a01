package ecplus

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/internal/tietest"
)

// TestTiedECPlus: ec+ on a tied weight keeps the tie: every reader's
// pruned weights are the same stored tensor (the one-shot selection over
// the tie, counted once), the embedding lookups read it pruned, and the
// refitted biases do not make the output worse than EC's one-shot plan.
func TestTiedECPlus(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 5))
	net := tietest.Net(t, rng)
	tie := net.Ties[0]
	const n = 48
	d := tietest.NewData(rng, n, 5)
	inputs := d.Inputs()
	base, err := analysis.Run(net, inputs)
	if err != nil {
		t.Fatal(err)
	}
	mse := func(plan *prune.Plan) float64 {
		tr, err := analysis.Run(prune.Apply(net, plan), inputs)
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
	opt := prune.Options{Sparsity: 0.5, Scope: prune.Layer, Compensate: true}
	ec, err := prune.Select(net, sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	eo := Options{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Recon: ReconAuto, ReconDamp: 0.01}
	plus, err := Prune(net, d, st, sc, opt, eo, analysis.TaskRegression, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	for li, lp := range plus.Layers {
		if !slices.Equal(lp.Pruned, ec.Layers[li].Pruned) {
			t.Errorf("layer %s: ec+ changed the tie's one-shot selection", lp.Layer.Node)
		}
	}
	for _, plan := range []*prune.Plan{ec, plus} {
		if plan.Total != tie.Size() || plan.Removed != prune.Count(0.5, tie.Size()) {
			t.Errorf("plan removes %d of %d, want %d of %d (the tie once)", plan.Removed, plan.Total, prune.Count(0.5, tie.Size()), tie.Size())
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
		tr, err := analysis.Run(prune.Apply(net, plan), inputs)
		if err != nil {
			t.Fatal(err)
		}
		outG := tr.Outputs()[2].Data
		for p, id := range d.IDs {
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
