package prune

import (
	"cmp"
	"math"
	"slices"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// UnitOptions say which hidden units to remove.
type UnitOptions struct {
	// Sparsity is the fraction of the removable units removed.
	Sparsity float64
	Scope    Scope
	// Skip names layers (weight initializer or node name) whose output
	// units stay.
	Skip []string
	// Compensate replaces each removed unit by its score's constant,
	// absorbed by the consumer's bias; without it the unit is dropped.
	Compensate bool
	// Reconstruct (SequentialUnits only) replaces the removed units by
	// their least-squares prediction from the kept ones, which changes the
	// consumer's kept columns too (UnitCut.ConsumerW).
	Reconstruct bool
}

// UnitCut is the removal of some units of one group.
type UnitCut struct {
	Group   *analysis.UnitGroup
	Keep    []int // kept units, ascending
	Removed []int // removed units, ascending
	// ConsumerB is the consumer's new effective bias (its Out values),
	// with the removed units' contributions W_next[:, j] c_j added; nil
	// when it does not change.
	ConsumerB []float64
	// ConsumerW is the consumer's new effective weights (Out x In; the
	// removed units' columns are dropped by the export), or nil when only
	// its bias changes.
	ConsumerW []float64
	Predicted float64 // sum of the removed units' scores
}

// UnitPlan is the removal of units in every group.
type UnitPlan struct {
	Cuts    []*UnitCut // one per scored group, graph order
	Removed int
	Total   int // removable units
}

// validate checks option values, naming what is wrong.
func (o UnitOptions) validate(net *onnxio.Network) error {
	if o.Sparsity < 0 || o.Sparsity >= 1 || math.IsNaN(o.Sparsity) {
		return optErr("Sparsity", "%g is outside [0, 1)", o.Sparsity)
	}
	if o.Scope != Global && o.Scope != Layer && o.Scope != "" {
		return optErr("Scope", "%q: want global or layer", o.Scope)
	}
	for _, s := range o.Skip {
		if net.LayerByName(s) == nil {
			return optErr("Skip", "%s: no such layer", s)
		}
	}
	return nil
}

// unitRef is a candidate in the ranking: a unit, or a head (a block of
// size units removed together), of a group (in graph order). key ranks
// it: the score per multiply-add its removal saves (weight).
type unitRef struct {
	group, unit int
	score       float64
	size        int
	weight      float64
}

func (u unitRef) key() float64 { return u.score / u.weight }

// blockWeight is what one block of g is ranked per: the multiply-adds its
// removal saves (analysis.SetUnitCosts), or its size in units when the
// costs are not set.
func blockWeight(g *analysis.UnitGroup) float64 {
	if g.Cost > 0 {
		return g.Cost
	}
	return float64(g.Block())
}

// ownPool tells whether group g is ranked on its own: with Scope Layer
// every group is, with Scope Global the attention blocks are (each loses
// its share of heads) and the hidden units of every other group are ranked
// together. Heads ranked across blocks by their first-order error crowd
// into one block, whose last heads then cost much more than predicted
// (docs/METHOD.md, "Cost-weighted selection").
func ownPool(g *analysis.UnitGroup, scope Scope) bool {
	return scope == Layer || g.Heads != nil
}

// candidates are a group's removal candidates: its units, or its heads
// for an attention group, all but the best-ranked one (a layer is never
// removed whole).
func candidates(gi int, gs *analysis.UnitGroupScores) []unitRef {
	g := gs.Group
	var all []unitRef
	if g.Heads != nil {
		for b, s := range gs.Block {
			all = append(all, unitRef{gi, b, s, g.Block(), blockWeight(g)})
		}
	} else {
		for j, s := range gs.Score {
			all = append(all, unitRef{gi, j, s, 1, blockWeight(g)})
		}
	}
	best := 0
	for j := range all {
		if cmpUnit(all[j], all[best]) > 0 {
			best = j
		}
	}
	return append(all[:best:best], all[best+1:]...)
}

// SelectUnits removes k = floor(s*U + 0.5) of the U removable units of
// each pool (ownPool: every group with Scope Layer; with Scope Global each
// attention block, and the hidden units of all other groups together),
// those of lowest score per multiply-add saved (UnitGroup.Cost; per unit
// when the costs are not set), never the last unit of a layer: each
// group's highest-scoring unit is not a candidate, so k is capped at U
// minus the number of groups. A head counts as its units; heads are taken
// while they fit in k, so the count can fall short of k by less than a
// head. Ties go by group order, then unit index; NaN scores rank last.
func SelectUnits(net *onnxio.Network, sc *analysis.UnitScores, opt UnitOptions) (*UnitPlan, error) {
	if err := opt.validate(net); err != nil {
		return nil, err
	}
	return selectUnits(net, sc, opt, 1), nil
}

// selectUnits is SelectUnits removing the fraction part of each pool's
// count (rounded), for the rounds of SequentialUnits.
func selectUnits(net *onnxio.Network, sc *analysis.UnitScores, opt UnitOptions, part float64) *UnitPlan {
	skip := map[*onnxio.Layer]bool{}
	for _, s := range opt.Skip {
		skip[net.LayerByName(s)] = true
	}
	plan := &UnitPlan{}
	var pool [][]unitRef // candidate sets ranked on their own
	var global []unitRef
	globalUnits := 0
	removed := make([][]bool, len(sc.Groups))
	pred := make([]float64, len(sc.Groups))
	for gi, gs := range sc.Groups {
		g := gs.Group
		removed[gi] = make([]bool, g.Units)
		if skip[g.Producer] {
			continue
		}
		plan.Total += g.Units
		cand := candidates(gi, gs)
		if ownPool(g, opt.Scope) {
			pool = append(pool, takeSmallest(cand, partOf(part, Count(opt.Sparsity, g.Units))))
			continue
		}
		global = append(global, cand...)
		globalUnits += g.Units
	}
	if len(global) > 0 {
		pool = append(pool, takeSmallest(global, partOf(part, Count(opt.Sparsity, globalUnits))))
	}
	for _, p := range pool {
		for _, u := range p {
			for _, j := range sc.Groups[u.group].Group.BlockUnits(u.unit) {
				removed[u.group][j] = true
			}
			if !math.IsNaN(u.score) {
				pred[u.group] += u.score
			}
		}
	}
	for gi, gs := range sc.Groups {
		g := gs.Group
		cut := &UnitCut{Group: g, Predicted: pred[gi]}
		for j, r := range removed[gi] {
			if r {
				cut.Removed = append(cut.Removed, j)
			} else {
				cut.Keep = append(cut.Keep, j)
			}
		}
		if opt.Compensate && len(cut.Removed) > 0 {
			cut.ConsumerB = compensatedBias(g.Consumer, cut.Removed, gs.Const)
		}
		plan.Removed += len(cut.Removed)
		plan.Cuts = append(plan.Cuts, cut)
	}
	return plan
}

// partOf is round(part * k), exactly k for part 1.
func partOf(part float64, k int) int {
	if part >= 1 {
		return k
	}
	return int(math.Floor(part*float64(k) + 0.5))
}

// takeSmallest returns the lowest-ranked candidates, in cmpUnit's order,
// whose sizes add up to at most k: a candidate that does not fit in what
// is left is passed over for smaller ones.
func takeSmallest(c []unitRef, k int) []unitRef {
	slices.SortFunc(c, cmpUnit)
	var out []unitRef
	n := 0
	for _, u := range c {
		if n+u.size <= k {
			out = append(out, u)
			n += u.size
		}
	}
	return out
}

// cmpUnit orders candidates by key (NaN last), then group, then index.
func cmpUnit(a, b unitRef) int {
	ak, bk := a.key(), b.key()
	an, bn := math.IsNaN(ak), math.IsNaN(bk)
	switch {
	case an && !bn:
		return 1
	case bn && !an:
		return -1
	case !an && ak != bk:
		return cmp.Compare(ak, bk)
	case a.group != b.group:
		return cmp.Compare(a.group, b.group)
	}
	return cmp.Compare(a.unit, b.unit)
}

// compensatedBias is the consumer's effective bias with the removed
// units' constant contributions W[:, j] c_j added (zeros plus them when
// the consumer has no bias), or nil when every contribution is 0.
func compensatedBias(l *onnxio.Layer, removed []int, c []float64) []float64 {
	b := make([]float64, l.Out)
	copy(b, l.B)
	nonzero := false
	for _, j := range removed {
		if c[j] == 0 {
			continue
		}
		nonzero = true
		for i := 0; i < l.Out; i++ {
			b[i] += l.At(i*l.In+j) * c[j]
		}
	}
	if !nonzero {
		return nil
	}
	return b
}
