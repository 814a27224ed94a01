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
// M_jj + 2 sum_{k in R} M_jk, per multiply-add it saves (UnitGroup.Cost;
// per unit when the costs are not set), over the pools of SelectUnits,
// until each pool's count is reached; a group's last unit
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
		g := newPairGroup(s.Group, s.Pairs(st.N))
		h := len(g.removed)
		gs[gi] = g
		if gone != nil {
			for j, r := range gone[gi] {
				if r && !g.removed[s.Group.BlockOf(j)] {
					g.remove(s.Group.BlockOf(j), h)
				}
			}
		}
		if skip[s.Group.Producer] {
			continue
		}
		if ownPool(s.Group, opt.Scope) {
			pools = append(pools, []int{gi})
			counts = append(counts, partOf(part, Count(opt.Sparsity, s.Group.Units)))
			continue
		}
		global = append(global, gi)
		globalUnits += s.Group.Units
	}
	if len(global) > 0 {
		pools = append(pools, global)
		counts = append(counts, partOf(part, Count(opt.Sparsity, globalUnits)))
	}
	for pi, pool := range pools {
		done := 0
		for _, gi := range pool {
			done += (len(gs[gi].removed) - gs[gi].kept) * gs[gi].size
		}
		for done < counts[pi] {
			bg, bj, best, bestCost := -1, -1, math.Inf(1), 0.0
			for _, gi := range pool {
				g := gs[gi]
				if g.kept <= 1 || done+g.size > counts[pi] {
					continue
				}
				h := len(g.removed)
				for j, r := range g.removed {
					if r {
						continue
					}
					// Ranked by error per multiply-add saved; NaN errors
					// (a unit never reaching the output) rank last.
					c := g.m[j*h+j] + 2*g.cross[j]
					k := c / g.weight
					if bj < 0 || k < best || math.IsNaN(best) && !math.IsNaN(k) {
						bg, bj, best, bestCost = gi, j, k, c
					}
				}
			}
			if bj < 0 {
				break // every group is down to one unit, or no head fits
			}
			gs[bg].add[bj] = bestCost
			gs[bg].remove(bj, len(gs[bg].removed))
			done += gs[bg].size
		}
	}
	plan := &UnitPlan{}
	for gi, s := range sc.Groups {
		g := st.Groups[gi].Group
		cut := &UnitCut{Group: g}
		for b, r := range gs[gi].removed {
			if r {
				cut.Predicted += gs[gi].add[b]
			}
		}
		for j := 0; j < g.Units; j++ {
			if gs[gi].removed[g.BlockOf(j)] {
				cut.Removed = append(cut.Removed, j)
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

// pairGroup is one group's state in the greedy selection, over its
// blocks (units, or heads of size units each).
type pairGroup struct {
	m       []float64 // Blocks x Blocks: M summed over the blocks' units
	cross   []float64 // sum over removed blocks c of M_bc
	removed []bool
	kept    int
	size    int       // units per block
	weight  float64   // what a block's error is ranked per (blockWeight)
	add     []float64 // cost paid when each block went
}

// newPairGroup sums the pair matrix m of group g's units into blocks.
func newPairGroup(g *analysis.UnitGroup, m []float64) *pairGroup {
	nb, h := g.Blocks(), g.Units
	p := &pairGroup{cross: make([]float64, nb), removed: make([]bool, nb), kept: nb, size: g.Block(), weight: blockWeight(g), add: make([]float64, nb)}
	if g.Heads == nil {
		p.m = m
		return p
	}
	p.m = make([]float64, nb*nb)
	for j := 0; j < h; j++ {
		for k := 0; k < h; k++ {
			p.m[g.BlockOf(j)*nb+g.BlockOf(k)] += m[j*h+k]
		}
	}
	return p
}

// remove takes unit j out and updates the cross sums.
func (g *pairGroup) remove(j, h int) {
	g.removed[j] = true
	g.kept--
	for k := range g.cross {
		g.cross[k] += g.m[k*h+j]
	}
}
