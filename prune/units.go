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

// unitRef is a candidate unit in the ranking: its group (in graph order)
// and index.
type unitRef struct {
	group, unit int
	score       float64
}

// SelectUnits removes the k = floor(s*U + 0.5) lowest-scoring of the U
// removable units (globally, or per group with Scope Layer), never the
// last unit of a layer: each group's highest-scoring unit is not a
// candidate, so k is capped at U minus the number of groups. Ties go by
// group order, then unit index; NaN scores rank last.
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
	for gi, gs := range sc.Groups {
		g := gs.Group
		removed[gi] = make([]bool, g.Units)
		if skip[g.Producer] {
			continue
		}
		plan.Total += g.Units
		best := 0
		for j := range gs.Score {
			if cmpUnit(unitRef{gi, j, gs.Score[j]}, unitRef{gi, best, gs.Score[best]}) > 0 {
				best = j
			}
		}
		var cand []unitRef
		for j, s := range gs.Score {
			if j != best {
				cand = append(cand, unitRef{gi, j, s})
			}
		}
		if opt.Scope == Layer {
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
			removed[u.group][u.unit] = true
		}
	}
	for gi, gs := range sc.Groups {
		g := gs.Group
		cut := &UnitCut{Group: g}
		for j, r := range removed[gi] {
			if r {
				cut.Removed = append(cut.Removed, j)
				if !math.IsNaN(gs.Score[j]) {
					cut.Predicted += gs.Score[j]
				}
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

// takeSmallest returns the k lowest-ranked candidates (fewer if there are
// fewer), in CompareScored's order of (score, position).
func takeSmallest(c []unitRef, k int) []unitRef {
	slices.SortFunc(c, cmpUnit)
	return c[:max(0, min(k, len(c)))]
}

// cmpUnit orders units by score (NaN last), then group, then index.
func cmpUnit(a, b unitRef) int {
	an, bn := math.IsNaN(a.score), math.IsNaN(b.score)
	switch {
	case an && !bn:
		return 1
	case bn && !an:
		return -1
	case !an && a.score != b.score:
		return cmp.Compare(a.score, b.score)
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
