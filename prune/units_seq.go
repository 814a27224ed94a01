package prune

import (
	"fmt"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// SequentialUnits is ec+ at unit level. One-shot unit EC costs every unit
// on the original network and alone, so the first-order errors of many
// removals only add up; here the units go in rounds: each round measures
// the unit statistics with their interactions (CollectUnitPairs) on the
// network with the earlier rounds' units already replaced by their means
// (consumer column zeroed, bias compensated), and extends the removed set
// greedily (selectPairs) to round r's share r/rounds of the count. A
// unit's mean is taken on the network as it is when the unit goes. With
// opt.Reconstruct the removed units are finally predicted from the kept
// ones by least squares (reconstruct). The count, the never-empty rule,
// scope and skip are SelectUnits'. groups must be the removable groups of
// net; the statistics of the first round are returned for the report.
func SequentialUnits(net *onnxio.Network, groups []*analysis.UnitGroup, data analysis.Data, sopt analysis.StatsOptions,
	opt UnitOptions, rounds int) (*UnitPlan, *analysis.UnitStats, error) {
	if err := opt.validate(net); err != nil {
		return nil, nil, err
	}
	if rounds < 1 {
		return nil, nil, optErr("Rounds", "%d: want at least 1", rounds)
	}
	work := net.Clone()
	wg := make([]*analysis.UnitGroup, len(groups))
	for i, g := range groups {
		c := *g
		c.Producer, c.Consumer = work.Layers[g.Producer.Index], work.Layers[g.Consumer.Index]
		wg[i] = &c
	}
	removed := make([][]bool, len(groups))
	pred := make([]float64, len(groups))
	means := make([][]float64, len(groups))
	orig := make([][]float64, len(groups))
	for i, g := range groups {
		removed[i] = make([]bool, g.Units)
		means[i] = make([]float64, g.Units)
		orig[i] = append([]float64(nil), g.Consumer.Weights64()...)
	}
	var first *analysis.UnitStats
	for r := 1; r <= rounds; r++ {
		st, err := analysis.CollectUnitPairs(work, wg, data, sopt)
		if err != nil {
			return nil, nil, fmt.Errorf("round %d: %w", r, err)
		}
		if first == nil {
			first = st
		}
		sc, err := analysis.ScoreUnits(st, "ec", true, sopt.Seed)
		if err != nil {
			return nil, nil, err
		}
		// Each round's selection extends the last one.
		p := selectPairs(work, st, sc, opt, float64(r)/float64(rounds), removed)
		for gi, c := range p.Cuts {
			l := wg[gi].Consumer
			w := l.Weights64()
			if l.W32 == nil {
				w = append([]float64(nil), w...) // W may be shared with net
			}
			b := make([]float64, l.Out)
			copy(b, l.B)
			changed := false
			for _, j := range c.Removed {
				if removed[gi][j] {
					continue
				}
				removed[gi][j], changed = true, true
				m := sc.Groups[gi].Const[j]
				means[gi][j] = m
				for i := 0; i < l.Out; i++ {
					b[i] += w[i*l.In+j] * m
					w[i*l.In+j] = 0
				}
			}
			if changed {
				l.SetWeights(w)
				l.B = b
				pred[gi] += c.Predicted
			}
		}
	}
	if opt.Reconstruct {
		if err := reconstruct(work, wg, removed, means, orig, data, sopt.Batch); err != nil {
			return nil, nil, err
		}
	}
	plan := &UnitPlan{}
	skip := map[*onnxio.Layer]bool{}
	for _, s := range opt.Skip {
		skip[net.LayerByName(s)] = true
	}
	for gi, g := range groups {
		cut := &UnitCut{Group: g, Predicted: pred[gi]}
		for j, gone := range removed[gi] {
			if gone {
				cut.Removed = append(cut.Removed, j)
			} else {
				cut.Keep = append(cut.Keep, j)
			}
		}
		if len(cut.Removed) > 0 {
			cut.ConsumerB = wg[gi].Consumer.B
			if opt.Reconstruct {
				cut.ConsumerW = wg[gi].Consumer.Weights64()
			}
		}
		if !skip[g.Producer] {
			plan.Total += g.Units
		}
		plan.Removed += len(cut.Removed)
		plan.Cuts = append(plan.Cuts, cut)
	}
	return plan, first, nil
}
