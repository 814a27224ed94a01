package prune

import (
	"math"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// unitNet is a 3-4-3-2 chain: two unit groups (4 and 3 units).
func unitNet() (*onnxio.Network, []*analysis.UnitGroup) {
	l0 := &onnxio.Layer{Index: 0, Name: "l0", Out: 4, In: 3, W: make([]float64, 12), B: []float64{1, 2, 3, 4}, Prunable: true}
	l1 := &onnxio.Layer{Index: 1, Name: "l1", Out: 3, In: 4, W: []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Prunable: true}
	l2 := &onnxio.Layer{Index: 2, Name: "l2", Out: 2, In: 3, W: []float64{1, 0, -1, 2, 0, -2}, Prunable: true}
	net := &onnxio.Network{Layers: []*onnxio.Layer{l0, l1, l2}, Evaluable: true}
	return net, []*analysis.UnitGroup{
		{Producer: l0, Consumer: l1, Units: 4},
		{Producer: l1, Consumer: l2, Units: 3},
	}
}

func unitScores(groups []*analysis.UnitGroup, scores, consts [][]float64) *analysis.UnitScores {
	sc := &analysis.UnitScores{Method: "ec"}
	for i, g := range groups {
		sc.Groups = append(sc.Groups, &analysis.UnitGroupScores{Group: g, Score: scores[i], Const: consts[i]})
	}
	return sc
}

func TestSelectUnits(t *testing.T) {
	zero := [][]float64{{0, 0, 0, 0}, {0, 0, 0}}
	cases := []struct {
		name    string
		scores  [][]float64
		opt     UnitOptions
		removed [][]int
		err     bool
	}{
		{"global ranks across layers", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 3.0 / 7}, [][]int{{1, 3}, {0}}, false},
		{"count is floor(s*U+0.5)", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 0.5}, [][]int{{1, 3}, {0, 2}}, false},
		{"never a whole layer", [][]float64{{0, 0, 0, 0}, {9, 9, 9}}, UnitOptions{Sparsity: 0.99}, [][]int{{0, 1, 2}, {0, 1}}, false},
		{"ties by group then index", [][]float64{{1, 1, 1, 1}, {1, 1, 1}}, UnitOptions{Sparsity: 0.3}, [][]int{{0, 1}, nil}, false},
		{"NaN ranks last", [][]float64{{math.NaN(), 2, 3, 4}, {math.NaN(), 1, 5}}, UnitOptions{Sparsity: 0.5}, [][]int{{1, 2, 3}, {1}}, false},
		{"per layer", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 0.5, Scope: Layer}, [][]int{{1, 3}, {0, 2}}, false},
		{"skip", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 0.5, Skip: []string{"l0"}}, [][]int{nil, {0, 2}}, false},
		{"sparsity 0", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{}, [][]int{nil, nil}, false},
		{"sparsity 1", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 1}, nil, true},
		{"unknown skip", [][]float64{{5, 1, 7, 3}, {2, 9, 4}}, UnitOptions{Sparsity: 0.5, Skip: []string{"nope"}}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net, groups := unitNet()
			plan, err := SelectUnits(net, unitScores(groups, c.scores, zero), c.opt)
			if c.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for gi, cut := range plan.Cuts {
				if !slices.Equal(cut.Removed, c.removed[gi]) {
					t.Errorf("group %d: removed %v, want %v", gi, cut.Removed, c.removed[gi])
				}
				if len(cut.Keep)+len(cut.Removed) != groups[gi].Units || len(cut.Keep) == 0 {
					t.Errorf("group %d: keep %v removed %v", gi, cut.Keep, cut.Removed)
				}
				total += len(cut.Removed)
			}
			if total != plan.Removed {
				t.Errorf("plan.Removed %d, cuts %d", plan.Removed, total)
			}
		})
	}
}

// TestSelectUnitsCompensation: the consumer's bias gains W[:, j] c_j for
// each removed unit j (from zero when it had none); no bias change when
// every constant is 0.
func TestSelectUnitsCompensation(t *testing.T) {
	net, groups := unitNet()
	groups[1].Consumer.B = nil
	consts := [][]float64{{0.5, -1, 2, 3}, {1, 0, 0}}
	plan, err := SelectUnits(net, unitScores(groups, [][]float64{{1, 0, 9, 9}, {0, 9, 1}}, consts), UnitOptions{Sparsity: 3.0 / 7, Compensate: true})
	if err != nil {
		t.Fatal(err)
	}
	// Group 0 removes units 0 and 1 of l1 (W row-major 3x4, B nil in
	// unitNet for l1), group 1 removes unit 0 of l2.
	l1 := groups[0].Consumer
	want := make([]float64, 3)
	for i := range want {
		want[i] = l1.W[i*4+0]*0.5 + l1.W[i*4+1]*-1
	}
	if got := plan.Cuts[0].ConsumerB; !slices.Equal(got, want) {
		t.Errorf("l1 bias %v, want %v", got, want)
	}
	if got, want := plan.Cuts[1].ConsumerB, []float64{1, 2}; !slices.Equal(got, want) {
		t.Errorf("l2 bias %v, want %v", got, want)
	}
	consts[1][0] = 0
	plan, err = SelectUnits(net, unitScores(groups, [][]float64{{1, 0, 9, 9}, {0, 9, 1}}, consts), UnitOptions{Sparsity: 3.0 / 7, Compensate: true})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Cuts[1].ConsumerB != nil {
		t.Errorf("zero constants changed the bias: %v", plan.Cuts[1].ConsumerB)
	}
}

// TestSelectUnitsPairs: the greedy selection pays for interactions: two
// units whose errors add up coherently are not removed together, though
// each alone is the cheapest; anticorrelated ones are.
func TestSelectUnitsPairs(t *testing.T) {
	cases := []struct {
		name    string
		m       []float64 // 4x4, symmetric
		removed []int
	}{
		{"coherent pair split", []float64{
			1, 0.9, 0, 0,
			0.9, 1, 0, 0,
			0, 0, 1.2, 0,
			0, 0, 0, 5}, []int{0, 2}},
		{"cancelling pair kept together", []float64{
			1, -0.9, 0, 0,
			-0.9, 1.1, 0, 0,
			0, 0, 1.05, 0,
			0, 0, 0, 5}, []int{0, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l0 := &onnxio.Layer{Index: 0, Name: "l0", Out: 4, In: 1, W: make([]float64, 4), Prunable: true}
			l1 := &onnxio.Layer{Index: 1, Name: "l1", Out: 1, In: 4, W: make([]float64, 4), Prunable: true}
			net := &onnxio.Network{Layers: []*onnxio.Layer{l0, l1}, Evaluable: true}
			g := &analysis.UnitGroup{Producer: l0, Consumer: l1, Units: 4}
			gs := &analysis.UnitGroupStats{Group: g, Shift: make([]float64, 4), A1: make([]float64, 4), Rows: 1,
				PP: c.m, PQ: make([]float64, 16), PR: make([]float64, 16)}
			st := &analysis.UnitStats{Net: net, Groups: []*analysis.UnitGroupStats{gs}, N: 1}
			sc := unitScores([]*analysis.UnitGroup{g}, [][]float64{{0, 0, 0, 0}}, [][]float64{{0, 0, 0, 0}})
			plan, err := SelectUnitsPairs(net, st, sc, UnitOptions{Sparsity: 0.5})
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.Cuts[0].Removed; !slices.Equal(got, c.removed) {
				t.Errorf("removed %v, want %v", got, c.removed)
			}
			var want float64
			for _, j := range c.removed {
				for _, k := range c.removed {
					want += c.m[j*4+k]
				}
			}
			if math.Abs(plan.Cuts[0].Predicted-want) > 1e-12 {
				t.Errorf("predicted %v, want %v", plan.Cuts[0].Predicted, want)
			}
		})
	}
}
