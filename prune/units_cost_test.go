package prune

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// TestSelectUnitsCostWeighted checks the ranking by score per
// multiply-add saved (UnitGroup.Cost) and the pools of the global scope:
// hidden units together, each attention block on its own.
func TestSelectUnitsCostWeighted(t *testing.T) {
	zero := [][]float64{{0, 0, 0, 0}, {0, 0, 0}}
	scores := [][]float64{{5, 1, 7, 3}, {2, 9, 4}}
	cases := []struct {
		name    string
		costs   [2]float64
		heads   bool // group 0 is an attention block of 2 heads of 2 units
		block   []float64
		opt     UnitOptions
		removed [][]int
	}{
		{"no costs: per unit", [2]float64{}, false, nil, UnitOptions{Sparsity: 3.0 / 7}, [][]int{{1, 3}, {0}}},
		{"equal costs: per unit", [2]float64{7, 7}, false, nil, UnitOptions{Sparsity: 3.0 / 7}, [][]int{{1, 3}, {0}}},
		{"costly layer goes first", [2]float64{10, 1}, false, nil, UnitOptions{Sparsity: 3.0 / 7}, [][]int{{0, 1, 3}, nil}},
		{"cheap layer goes last", [2]float64{1, 10}, false, nil, UnitOptions{Sparsity: 3.0 / 7}, [][]int{{1}, {0, 2}}},
		{"layer scope ignores costs", [2]float64{10, 1}, false, nil, UnitOptions{Sparsity: 0.5, Scope: Layer}, [][]int{{1, 3}, {0, 2}}},
		// Head 0 (units 0, 1) scores 6, head 1 (2, 3) 10: the block
		// loses round(0.5*4) = 2 units, one head, whatever the other
		// group's units score; the hidden units are ranked on their own.
		{"a block loses its share of heads", [2]float64{100, 1}, true, []float64{6, 10}, UnitOptions{Sparsity: 0.5}, [][]int{{0, 1}, {0, 2}}},
		{"heads: none below one head", [2]float64{100, 1}, true, []float64{6, 10}, UnitOptions{Sparsity: 0.2}, [][]int{nil, {0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net, groups := unitNet()
			for i, g := range groups {
				g.Cost = c.costs[i]
			}
			if c.heads {
				groups[0].Heads = &analysis.HeadInfo{Heads: 2, ValueStride: 2}
			}
			sc := unitScores(groups, scores, zero)
			sc.Groups[0].Block = c.block
			plan, err := SelectUnits(net, sc, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			for i, cut := range plan.Cuts {
				if !slices.Equal(cut.Removed, c.removed[i]) {
					t.Errorf("group %d: removed %v, want %v", i, cut.Removed, c.removed[i])
				}
			}
		})
	}
}

// TestSelectUnitsCostExhaustive compares the global selection with an
// exhaustive search on small chains with random scores and costs: of all
// sets of the counted size that leave every layer a unit, the selection
// has the least sum of score per multiply-add (the knapsack greedy's
// ratio: it takes the cheapest error per unit of work saved first).
func TestSelectUnitsCostExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := 0; trial < 40; trial++ {
		sizes := []int{2 + rng.IntN(4), 2 + rng.IntN(4), 2 + rng.IntN(3)}
		net := &onnxio.Network{Evaluable: true}
		var groups []*analysis.UnitGroup
		in := 3
		for i, h := range append(sizes, 2) {
			net.Layers = append(net.Layers, &onnxio.Layer{Index: i, Name: string(rune('a' + i)), Out: h, In: in, W: make([]float64, h*in), B: make([]float64, h), Prunable: true})
			in = h
		}
		var scores, consts [][]float64
		total := 0
		for i, h := range sizes {
			g := &analysis.UnitGroup{Producer: net.Layers[i], Consumer: net.Layers[i+1], Units: h, Cost: 1 + 9*rng.Float64()}
			groups = append(groups, g)
			s := make([]float64, h)
			for j := range s {
				s[j] = rng.Float64()
			}
			scores, consts = append(scores, s), append(consts, make([]float64, h))
			total += h
		}
		sp := rng.Float64() * 0.8
		k := min(Count(sp, total), total-len(sizes))
		plan, err := SelectUnits(net, unitScores(groups, scores, consts), UnitOptions{Sparsity: sp})
		if err != nil {
			t.Fatal(err)
		}
		if plan.Removed != k {
			t.Fatalf("trial %d: removed %d, want %d", trial, plan.Removed, k)
		}
		ratio := func(gi, j int) float64 { return scores[gi][j] / groups[gi].Cost }
		got := 0.0
		for gi, c := range plan.Cuts {
			for _, j := range c.Removed {
				got += ratio(gi, j)
			}
		}
		best := math.Inf(1)
		for mask := 0; mask < 1<<total; mask++ {
			if popcount(mask) != k {
				continue
			}
			sum, bit, ok := 0.0, 0, true
			for gi, h := range sizes {
				gone := 0
				for j := 0; j < h; j++ {
					if mask>>bit&1 == 1 {
						sum += ratio(gi, j)
						gone++
					}
					bit++
				}
				ok = ok && gone < h
			}
			if ok {
				best = min(best, sum)
			}
		}
		if math.Abs(got-best) > 1e-12 {
			t.Errorf("trial %d (sizes %v, s %.2f): selection sums %g, exhaustive best %g", trial, sizes, sp, got, best)
		}
	}
}

func popcount(x int) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}
