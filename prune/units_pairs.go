package prune

import (
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// SelectUnitsPairs is SelectUnits for ec with the interactions of removed
// units: the first-order output error of removing a set R of a group's
// units is sum_{j,k in R} M_jk (UnitGroupStats.Pairs), not the sum of the
// one-unit importances M_jj, and on MNIST MLPs the difference is 10-30x
// (the errors of redundant units add up coherently). Units are removed one
// at a time, each time the one whose removal adds least to that error,
// M_jj + 2 sum_{k in R} M_jk, over all groups (or per group with Scope
// Layer), until the count of SelectUnits is reached; a group's last unit
// is never removed. Ties go by group order, then unit index. st must come
// from CollectUnitPairs; sc gives the constants.
func SelectUnitsPairs(net *onnxio.Network, st *analysis.UnitStats, sc *analysis.UnitScores, opt UnitOptions) (*UnitPlan, error) {
	if err := opt.validate(net); err != nil {
		return nil, err
	}
	return selectPairs(net, st, sc, opt, 1, nil), nil
}

// selectPairs extends the removed sets gone (nil: none) to the fraction
// part of the count.
func selectPairs(net *onnxio.Network, st *analysis.UnitStats, sc *analysis.UnitScores, opt UnitOptions, part float64, gone [][]bool) *UnitPlan {
	skip := map[*onnxio.Layer]bool{}
	for _, s := range opt.Skip {
		skip[net.LayerByName(s)] = true
	}
	gs := make([]*pairGroup, len(st.Groups))
	var pools [][]int // group indices ranked together, with their counts
	var counts []int
	var global []int
	globalUnits := 0
	for gi, s := range st.Groups {
		h := s.Group.Units
		g := &pairGroup{m: s.Pairs(st.N), cross: make([]float64, h), removed: make([]bool, h), kept: h, add: make([]float64, h)}
		gs[gi] = g
		if gone != nil {
			for j, r := range gone[gi] {
				if r {
					g.remove(j, h)
				}
			}
		}
		if skip[s.Group.Producer] {
			continue
		}
		if opt.Scope == Layer {
			pools = append(pools, []int{gi})
			counts = append(counts, partOf(part, Count(opt.Sparsity, h)))
			continue
		}
		global = append(global, gi)
		globalUnits += h
	}
	if len(global) > 0 {
		pools = append(pools, global)
		counts = append(counts, partOf(part, Count(opt.Sparsity, globalUnits)))
	}
	for pi, pool := range pools {
		done := 0
		for _, gi := range pool {
			done += len(gs[gi].removed) - gs[gi].kept
		}
		for ; done < counts[pi]; done++ {
			bg, bj, best := -1, -1, math.Inf(1)
			for _, gi := range pool {
				g := gs[gi]
				if g.kept <= 1 {
					continue
				}
				h := len(g.removed)
				for j, r := range g.removed {
					if r {
						continue
					}
					// NaN costs (a unit never reaching the output) rank last.
					c := g.m[j*h+j] + 2*g.cross[j]
					if bj < 0 || c < best || math.IsNaN(best) && !math.IsNaN(c) {
						bg, bj, best = gi, j, c
					}
				}
			}
			if bj < 0 {
				break // every group is down to one unit
			}
			gs[bg].add[bj] = best
			gs[bg].remove(bj, len(gs[bg].removed))
		}
	}
	plan := &UnitPlan{}
	for gi, s := range sc.Groups {
		g := st.Groups[gi].Group
		cut := &UnitCut{Group: g}
		for j, r := range gs[gi].removed {
			if r {
				cut.Removed = append(cut.Removed, j)
				cut.Predicted += gs[gi].add[j]
			} else {
				cut.Keep = append(cut.Keep, j)
			}
		}
		if opt.Compensate && len(cut.Removed) > 0 {
			cut.ConsumerB = compensatedBias(g.Consumer, cut.Removed, s.Const)
		}
		if !skip[g.Producer] {
			plan.Total += g.Units
		}
		plan.Removed += len(cut.Removed)
		plan.Cuts = append(plan.Cuts, cut)
	}
	return plan
}

// pairGroup is one group's state in the greedy selection.
type pairGroup struct {
	m       []float64 // Units x Units
	cross   []float64 // sum over removed k of M_jk
	removed []bool
	kept    int
	add     []float64 // cost paid when each unit went
}

// remove takes unit j out and updates the cross sums.
func (g *pairGroup) remove(j, h int) {
	g.removed[j] = true
	g.kept--
	for k := range g.cross {
		g.cross[k] += g.m[k*h+j]
	}
}
