package analysis

import (
	"fmt"

	"github.com/ecprune/ecprune/onnxio"
)

// What a removal saves. Hidden units of different layers save different
// work: a unit of LeNet-300-100's first hidden layer takes a row of 784
// weights and a column of 100 with it, one of the second 300 and 10; a
// head takes its q/k/v rows, its output-projection columns and its share
// of the T x T score and context products. Ranked by importance per
// multiply-add saved (a knapsack's greedy ratio), the same number of
// units removed saves more work.

// SetUnitCosts sets each group's Cost: the multiply-adds per sample that
// removing one of its blocks (a unit, or a head) saves in the dense and
// MatMul products (MatMulMACs), for the shapes of probe (a batch of
// samples along the first axis of every input). For a plain group the
// producer's row and the consumer's column go; for a head, the head's
// rows of every q/k/v projection, its columns of the output projection,
// and its 1/Heads share of every MatMul between them (the head axis is a
// batch axis of those, see HeadInfo). Costs of several removals add up
// except where two removed units meet in one weight (a unit of a layer's
// input and one of its output): that product is counted by both.
func SetUnitCosts(net *onnxio.Network, groups []*UnitGroup, probe []*Tensor) error {
	if len(groups) == 0 {
		return nil
	}
	if len(probe) == 0 || len(probe[0].Shape) == 0 || probe[0].Shape[0] < 1 {
		return fmt.Errorf("unit costs: no probe batch")
	}
	tr, err := Run(net, probe)
	if err != nil {
		return fmt.Errorf("unit costs: %w", err)
	}
	n := float64(probe[0].Shape[0])
	for _, g := range groups {
		if !g.Removable() {
			continue
		}
		var c int64
		if g.Heads == nil {
			c = denseRows(net, tr, g.ProdOp)*int64(g.Producer.In) + denseRows(net, tr, g.ConsOp)*int64(g.Consumer.Out)
		} else {
			h := int64(g.Heads.Heads)
			for _, p := range g.Heads.ProdOps {
				l := net.Ops[p].Layer
				c += denseRows(net, tr, p) * int64(l.In) * int64(l.Out) / h
			}
			c += denseRows(net, tr, g.ConsOp) * int64(g.Consumer.Out) * int64(g.Block())
			var region int64
			for _, oi := range g.Heads.Region {
				region += opMACs(&net.Ops[oi], tr)
			}
			c += region / h
		}
		g.Cost = float64(c) / n
	}
	return nil
}

// MatMulMACs is the multiply-adds of a traced run's dense layers and
// MatMuls of two computed values (the products a structured removal
// shrinks; convolutions and elementwise ops are not counted).
func MatMulMACs(net *onnxio.Network, tr *Trace) int64 {
	var s int64
	for i := range net.Ops {
		s += opMACs(&net.Ops[i], tr)
	}
	return s
}

// opMACs is an op's multiply-adds in the trace: a dense layer's rows x Out
// x In, a MatMul's output elements x the contracted length; 0 for others.
func opMACs(op *onnxio.Op, tr *Trace) int64 {
	switch {
	case op.Kind == onnxio.OpDense:
		return int64(tr.Values[op.In[0]].Len()/op.Layer.In) * int64(op.Layer.Out) * int64(op.Layer.In)
	case op.Kind == onnxio.OpNode && op.Type == "MatMul" && len(op.In) == 2:
		a := tr.Values[op.In[0]].Shape
		k := 1
		if len(a) > 0 {
			k = a[len(a)-1]
		}
		return int64(tr.Values[op.Out].Len()) * int64(k)
	}
	return 0
}

// denseRows is how many rows (the input's elements over In) dense op oi
// multiplies in the trace.
func denseRows(net *onnxio.Network, tr *Trace, oi int) int64 {
	op := &net.Ops[oi]
	return int64(tr.Values[op.In[0]].Len() / op.Layer.In)
}
