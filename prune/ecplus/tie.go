package ecplus

import (
	"github.com/ecprune/ecprune/onnxio"
)

// ec+ on tied weights. A tied weight (onnxio.Tie) is one stored tensor
// read by several layers, so neither the sequential greedy selection nor
// the least-squares reconstruction, both per layer, applies: either would
// give the uses different weights. Its uses take the one-shot EC selection
// of the tie group (importance summed over the uses), and ec+ keeps what
// is per use: each use's bias is set so that the g-weighted mean of its
// residual on the partly pruned network is zero, and the final refit
// moves it with every other bias.

// pruneTied applies a tie group's one-shot mask to one use in cur, prunes
// the tie's embedding lookups with the first use, and sets the use's bias
// from its residual.
func (e *ecp) pruneTied(cur *onnxio.Network, li int, mask []bool, gathersDone map[*onnxio.Tie]bool) (*ecpLayerResult, error) {
	ls := e.st.Layers[li]
	l := cur.Ops[ls.Op].Layer
	out := l.Out
	if l.B == nil {
		l.B = make([]float64, out)
	}
	res := &ecpLayerResult{pruned: append([]bool(nil), mask...)}
	for q, p := range mask {
		if p {
			l.W[q] = 0
			res.removed++
		}
	}
	if t := ls.Layer.Tie; len(t.Gathers) > 0 && !gathersDone[t] {
		gathersDone[t] = true
		stored := make([]bool, t.Size())
		for q, p := range mask {
			stored[l.StoredIndex(q)] = p
		}
		cur.PruneTieGathers(t, stored)
		e.prev = nil // the kept traces hold the unpruned lookups
	}
	sums := newECPSumsSmall(out, l.In) // the bias only
	err := e.layerPass(cur, li, false, true, func(_, zc, z0, g []float64, rows, _ int) error {
		for r := 0; r < rows; r++ {
			for i, v := range g[r*out : (r+1)*out] {
				sums.s0[i] += v
			}
		}
		sums.addResidual(nil, sub(grow(&sums.eBuf, len(zc)), zc, z0), g, rows, false)
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.passes++
	e.prog.add(1) // the layer's pass
	if res.removed > 0 {
		e.prog.add(e.eo.Rounds) // the rounds it has no need of
	}
	for i := range l.B {
		l.B[i] += sums.biasFix(i)
	}
	e.logf("ec+: layer %s: tied weight %s: one-shot EC selection over its %d uses, removed %d of %d; bias corrected on the residual, no sequential selection or reconstruction",
		l.Name, ls.Layer.Tie.Init, len(ls.Layer.Tie.Layers), res.removed, l.Params())
	return res, nil
}
