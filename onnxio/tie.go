package onnxio

import (
	"fmt"
	"slices"
	"strings"
)

// Tie is a stored weight tensor that several nodes read: a Linear applied
// twice, an embedding whose matrix is also the output head, the merged
// initializers of an exporter that found identical layers. Pruning changes
// the stored tensor, so every reader sees the change: the tie is pruned as
// one tensor, with the importance of an element summed over its uses, and
// written back once.
type Tie struct {
	Init       string // the initializer
	Rows, Cols int    // its stored shape
	// Layers are the dense uses, graph order: each is a Layer of its own
	// for analysis (its own statistics, its own bias), whose weight
	// position q maps to the stored element StoredIndex(q).
	Layers []*Layer
	// Gathers are embedding uses: Gather on axis 0 of the stored rows
	// (through Identity nodes only), whose output changes where a pruned
	// element's row is looked up.
	Gathers []TieGather
	// Others names the readers that are neither (an op on the weight
	// whose effect ecprune does not measure): a tie with some is not
	// prunable.
	Others []string
}

// TieGather is a Gather reading the tied tensor as its data input.
type TieGather struct {
	Node    string // node label, as Op.Node
	NodeIdx int    // graph node index
}

// Size is the number of stored elements.
func (t *Tie) Size() int { return t.Rows * t.Cols }

// StoredIndex maps a weight position q (row-major [Out, In] of the
// effective W) to the position of the same element in the initializer as
// stored: the identity for a weight stored [out, in], a transposition for
// one stored [in, out], shifted by the block's offset for a weight that is
// a block of rows of the initializer.
func (l *Layer) StoredIndex(q int) int {
	base := 0
	if l.WeightRows > 0 {
		cols := l.In
		if l.WeightLayout == LayoutInOut {
			cols = l.Out
		}
		base = l.WeightRow0 * cols
	}
	if l.WeightLayout == LayoutInOut {
		o, j := q/l.In, q%l.In
		return base + j*l.Out + o
	}
	return base + q
}

// BlockRows is the number of stored rows the layer's weight covers: all
// of WeightInit's, or its block's.
func (l *Layer) BlockRows() int {
	if l.WeightLayout == LayoutInOut {
		return l.In
	}
	return l.Out
}

// GatherOp finds the op of a Gather use in the network (nil when the
// Gather is not part of the evaluated network) and the value ids of its
// data (the tied tensor's constant) and indices.
func (n *Network) GatherOp(g TieGather) (op *Op, data, indices int) {
	for i := range n.Ops {
		o := &n.Ops[i]
		if o.Kind != OpNode || o.Type != "Gather" || o.Node != g.Node || len(o.Slots) < 2 || o.Slots[0] < 0 || o.Slots[1] < 0 {
			continue
		}
		return o, o.In[o.Slots[0]], o.In[o.Slots[1]]
	}
	return nil, -1, -1
}

// PruneTieGathers zeroes the stored elements marked in pruned (stored
// order) in the constants the tie's Gather uses read, so that the network
// evaluates as the pruned file will. The constants are replaced, not
// written: a clone sharing them keeps the originals.
func (n *Network) PruneTieGathers(t *Tie, pruned []bool) {
	if len(t.Gathers) == 0 {
		return
	}
	ids := map[int]bool{}
	for _, g := range t.Gathers {
		if op, data, _ := n.GatherOp(g); op != nil {
			ids[data] = true
		}
	}
	copied := false
	for k, cv := range n.Consts {
		if !ids[cv.Value] || cv.Const == nil || len(cv.Const.Data) != len(pruned) {
			continue
		}
		if !copied {
			n.Consts = slices.Clone(n.Consts)
			copied = true
		}
		c := *cv.Const
		c.Data = slices.Clone(c.Data)
		for q, p := range pruned {
			if p {
				c.Data[q] = 0
			}
		}
		n.Consts[k].Const = &c
	}
}

// tieReader is a node reading an initializer, directly or through
// Identity and Transpose nodes.
type tieReader struct {
	node       int
	slot       int  // the node's input position reading the weight
	transposed bool // through a Transpose
	identities bool // through Identity nodes only (or directly)
}

// tieReaders lists the readers of an initializer through Identity and 2-D
// Transpose nodes, and whether the tensor (or such a copy) is a graph
// output.
func (x *extractor) tieReaders(name string) (rs []tieReader, exposed bool) {
	seen := map[string]bool{}
	var walk func(v string, transposed, anyT bool)
	walk = func(v string, transposed, anyT bool) {
		if seen[v] {
			return
		}
		seen[v] = true
		exposed = exposed || x.g.IsOutput[v]
		for _, u := range x.g.Consumers[v] {
			n := x.g.G.Node[u]
			op := n.GetOpType()
			if x.blocks[u] && n.Input[0] == v {
				// A block of the tensor's rows: its readers read part of it.
				walk(n.Output[0], transposed, true)
				continue
			}
			if (op == "Identity" || op == "Transpose") && len(n.Output) > 0 && len(n.Input) > 0 && n.Input[0] == v {
				if perm := AttrInts(n, "perm"); op == "Identity" || perm == nil || slices.Equal(perm, []int64{1, 0}) {
					walk(n.Output[0], transposed != (op == "Transpose"), anyT || op == "Transpose")
					continue
				}
			}
			for k, in := range n.Input {
				if in == v {
					rs = append(rs, tieReader{node: u, slot: k, transposed: transposed, identities: !anyT})
				}
			}
		}
	}
	walk(name, false, false)
	slices.SortStableFunc(rs, func(a, b tieReader) int { return a.node - b.node })
	return rs, exposed
}

// tieLayers groups the dense layers that read the same initializer (found
// shared while extracting) into ties, records the other readers, and
// marks the uses not prunable where a reader's effect cannot be measured
// or the tensor is also a graph output.
func (x *extractor) tieLayers() {
	byInit := map[string][]*Layer{}
	var order []string
	for _, l := range x.net.Layers {
		if l.WeightInit == "" || !x.shared[l.WeightInit] {
			continue
		}
		if _, ok := byInit[l.WeightInit]; !ok {
			order = append(order, l.WeightInit)
		}
		byInit[l.WeightInit] = append(byInit[l.WeightInit], l)
	}
	for _, init := range order {
		layers := byInit[init]
		c := x.consts[init]
		t := &Tie{Init: init, Layers: layers}
		if c != nil && len(c.shape) == 2 {
			t.Rows, t.Cols = c.shape[0], c.shape[1]
		}
		byMain := map[int]*Layer{}
		for _, l := range layers {
			byMain[l.MainIdx] = l
		}
		rs, exposed := x.tieReaders(init)
		for _, r := range rs {
			n := x.g.G.Node[r.node]
			label := nodeLabel(r.node, n)
			switch op := n.GetOpType(); {
			case byMain[r.node] != nil && r.slot == 1 && (op == "Gemm" || op == "MatMul"):
				// a dense use, already a layer
			case op == "Shape" || op == "Size":
				// Reads the dims only, which pruning keeps.
			case op == "Gather" && r.slot == 0 && r.identities && AttrInt(n, "axis", 0) == 0 && t.Rows > 0:
				t.Gathers = append(t.Gathers, TieGather{Node: label, NodeIdx: r.node})
			default:
				t.Others = append(t.Others, fmt.Sprintf("%s (%s)", label, op))
			}
		}
		reason, blocks := "", false
		covered := make([]bool, t.Rows)
		for _, l := range layers {
			if l.WeightRows == 0 {
				for r := range covered {
					covered[r] = true
				}
				continue
			}
			blocks = true
			for r := l.WeightRow0; r < l.WeightRow0+l.BlockRows() && r < len(covered); r++ {
				covered[r] = true
			}
		}
		switch {
		case exposed:
			reason = fmt.Sprintf("weight %s is also a graph output", init)
		case t.Rows == 0:
			reason = fmt.Sprintf("weight %s is shared and not a matrix", init)
		case len(t.Others) > 0:
			reason = fmt.Sprintf("weight %s is also read by %s, whose change ecprune does not measure", init, strings.Join(t.Others, ", "))
		case blocks && slices.Contains(covered, false):
			// Every stored element must belong to some layer, or its
			// removal would not be measured.
			r := slices.Index(covered, false)
			reason = fmt.Sprintf("row %d of weight %s is read by no dense layer", r, init)
		}
		for _, l := range layers {
			if !l.Prunable && reason == "" {
				reason = fmt.Sprintf("weight %s is shared with layer %s, which is not prunable: %s", init, l.Node, l.Reason)
			}
		}
		if reason != "" {
			for _, l := range layers {
				if l.Prunable {
					l.Prunable, l.Reason = false, reason
				}
			}
		}
		if len(layers)+len(t.Gathers) < 2 && len(t.Others) == 0 && !blocks {
			continue // one dense use after all: not a tie
		}
		for _, l := range layers {
			l.Tie = t
		}
		x.net.Ties = append(x.net.Ties, t)
	}
}
