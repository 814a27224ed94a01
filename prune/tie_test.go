package prune

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune/internal/tietest"
)

// TestTiedImportanceBruteForce: the importance selection ranks a tied
// element by (the sum over the dense uses of EC's importance plus the
// embedding use's uncompensated one) is, on a network where it is exact,
// the mean squared output change of zeroing the element in every reader
// with each dense use's own optimal bias shift, measured by running the
// network. It is checked for every stored element, with derivatives in
// forward and in reverse mode, and the exact method's measurement of the
// same removal agrees.
func TestTiedImportanceBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 4))
	net := tietest.Net(t, rng)
	if len(net.Ties) != 1 {
		t.Fatalf("%d ties, want 1", len(net.Ties))
	}
	tie := net.Ties[0]
	if len(tie.Layers) != 2 || len(tie.Gathers) != 1 || len(tie.Others) != 0 {
		t.Fatalf("tie %+v: want 2 dense uses and 1 Gather", tie)
	}
	if tie.Layers[0].WeightLayout == tie.Layers[1].WeightLayout {
		t.Fatalf("both uses have layout %v: want one transposed", tie.Layers[0].WeightLayout)
	}
	const n = 40
	d := tietest.NewData(rng, n, 4) // row 4 of E is never looked up
	inputs := d.Inputs()
	base, err := analysis.Run(net, inputs)
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range []string{analysis.ADForward, analysis.ADReverse} {
		t.Run(ad, func(t *testing.T) {
			st, err := analysis.Collect(net, d, analysis.StatsOptions{AD: ad, Batch: 16})
			if err != nil {
				t.Fatal(err)
			}
			c, err := analysis.CriterionByName("ec")
			if err != nil {
				t.Fatal(err)
			}
			sc, err := c.Score(st, 1)
			if err != nil {
				t.Fatal(err)
			}
			plan := &Plan{}
			for _, ls := range sc.Layers {
				plan.Layers = append(plan.Layers, &LayerPlan{Layer: ls.Layer, Pruned: make([]bool, ls.Layer.Params())})
			}
			var unit *selUnit
			for _, u := range selectionUnits(sc, plan) {
				if u.tie == tie {
					unit = u
				}
			}
			if unit == nil || len(unit.score) != tie.Size() {
				t.Fatal("no selection unit for the tie")
			}
			gatherPart := 0.0
			for k := 0; k < tie.Size(); k++ {
				// Zero element k everywhere; shift each dense use's bias
				// by its own delta*.
				c := net.Clone()
				for li, ls := range sc.Layers {
					l := c.Layers[ls.Layer.Index]
					if l.Tie == nil {
						continue
					}
					w := l.Weights64()
					w = append([]float64(nil), w...)
					for q := range w {
						if l.StoredIndex(q) == k {
							w[q] = 0
							if l.B == nil {
								l.B = make([]float64, l.Out)
							} else {
								l.B = append([]float64(nil), l.B...)
							}
							l.B[q/l.In] += sc.Layers[li].Delta[q]
						}
					}
					l.SetWeights(w)
				}
				mask := make([]bool, tie.Size())
				mask[k] = true
				c.PruneTieGathers(tie, mask)
				tr, err := analysis.Run(c, inputs)
				if err != nil {
					t.Fatal(err)
				}
				var got float64
				for o, y := range tr.Outputs() {
					for q, v := range y.Data {
						dv := v - base.Outputs()[o].Data[q]
						got += dv * dv
					}
				}
				got /= n
				want := unit.score[k]
				if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(got)) {
					t.Errorf("element %d: measured %.12g, predicted %.12g", k, got, want)
				}
				if k/4 == 4 && want != 0 && sc.Ties != nil && sc.Ties[0].Score[k] != 0 {
					t.Errorf("element %d: row 4 is never looked up, its embedding score is %g", k, sc.Ties[0].Score[k])
				}
				if len(sc.Ties) == 1 {
					gatherPart += sc.Ties[0].Score[k]
				}
			}
			if gatherPart == 0 {
				t.Error("the embedding use adds nothing: it is not counted")
			}
			// exact measures the same removal by re-running the network:
			// here it must agree with the prediction.
			ex, err := analysis.Exact(net, d, st, analysis.ExactOptions{Batch: 16, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range selectionUnits(ex, plan) {
				if u.tie != tie {
					continue
				}
				for k, v := range u.score {
					if math.Abs(v-unit.score[k]) > 1e-9*math.Max(1, math.Abs(v)) {
						t.Errorf("element %d: exact %.12g, EC %.12g", k, v, unit.score[k])
					}
				}
			}
		})
	}
}
