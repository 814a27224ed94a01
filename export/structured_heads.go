package export

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// HeadCut makes a UnitCut the removal of whole attention heads: the
// consumer (the output projection) loses the columns of the removed heads
// (UnitCut.Keep, its kept input units), each producer (the q/k/v
// projections) the rows of the removed heads, and the integer inputs that
// carry the head count (Reshape targets, Concat pieces of computed
// shapes, Split sizes, Slice bounds) are replaced by new constants.
type HeadCut struct {
	Heads     int
	KeepHeads []int // kept heads, ascending, at least one
	Producers []*onnxio.Layer
	// ProducerStride[i]: row u of producer i belongs to head
	// (u / ProducerStride[i]) mod Heads.
	ProducerStride []int
	Shapes         []ShapeEdit
	// Values are the tensors whose head axis shrinks: their declared
	// shapes (value_info) are dropped, since the runtime infers them.
	Values []string
}

// ShapeEdit replaces input Input of node Node (its name, or op type and
// index for an unnamed node) by a new 1-D int64 constant holding Data.
type ShapeEdit struct {
	Node  string
	Input int
	Data  []int64
}

// headRows are the rows of a producer that belong to the kept heads.
func (h *HeadCut) headRows(i int) []int {
	l := h.Producers[i]
	var rows []int
	for u := 0; u < l.Out; u++ {
		if slices.Contains(h.KeepHeads, (u/h.ProducerStride[i])%h.Heads) {
			rows = append(rows, u)
		}
	}
	return rows
}

// checkHeads validates a head cut against its unit cut.
func (c UnitCut) checkHeads() error {
	h := c.Heads
	if h.Heads < 2 || c.Units%h.Heads != 0 {
		return fmt.Errorf("%d units in %d heads", c.Units, h.Heads)
	}
	if len(h.KeepHeads) == 0 {
		return fmt.Errorf("every head removed, which would remove the attention")
	}
	if !slices.IsSorted(h.KeepHeads) || h.KeepHeads[0] < 0 || h.KeepHeads[len(h.KeepHeads)-1] >= h.Heads ||
		len(slices.Compact(slices.Clone(h.KeepHeads))) != len(h.KeepHeads) {
		return fmt.Errorf("kept heads are not ascending distinct indices below %d", h.Heads)
	}
	if len(h.Producers) == 0 || len(h.Producers) != len(h.ProducerStride) {
		return fmt.Errorf("%d projections with %d strides", len(h.Producers), len(h.ProducerStride))
	}
	for i, l := range h.Producers {
		if s := h.ProducerStride[i]; s <= 0 || l.Out%(s*h.Heads) != 0 {
			return fmt.Errorf("projection %s: %d outputs do not split into %d heads of stride %d", l.Name, l.Out, h.Heads, s)
		}
	}
	return nil
}

// applyShapeEdits writes the new shape constants of a head cut and
// returns the names of the inputs they replaced.
func (e *editor) applyShapeEdits(edits []ShapeEdit) ([]string, error) {
	var replaced []string
	for _, s := range edits {
		ni := -1
		for i := range e.g.Node {
			if e.nodeLabel(i) == s.Node {
				ni = i
				break
			}
		}
		if ni < 0 {
			return nil, fmt.Errorf("no node %s", s.Node)
		}
		n := e.g.Node[ni]
		if s.Input < 0 || s.Input >= len(n.Input) || n.Input[s.Input] == "" {
			return nil, fmt.Errorf("node %s has no input %d", s.Node, s.Input)
		}
		raw := make([]byte, 0, 8*len(s.Data))
		for _, x := range s.Data {
			raw = binary.LittleEndian.AppendUint64(raw, uint64(x))
		}
		old := n.Input[s.Input]
		t := &pb.TensorProto{Name: proto.String(e.unique(old + "_ecprune_heads")), DataType: proto.Int32(int32(pb.TensorProto_INT64)),
			Dims: []int64{int64(len(s.Data))}, RawData: raw}
		e.addInit(t)
		n.Input[s.Input] = t.GetName()
		e.redirected[old] = true
		replaced = append(replaced, old)
	}
	return replaced, nil
}

// dropDeclared removes the declared shapes of values whose head axis
// shrinks.
func (e *editor) dropDeclared(values []string) {
	if len(values) == 0 {
		return
	}
	vi := e.g.ValueInfo[:0:0]
	for _, v := range e.g.ValueInfo {
		if !slices.Contains(values, v.GetName()) {
			vi = append(vi, v)
		}
	}
	e.g.ValueInfo = vi
}

// UnitCutFor is the cut of a removable unit group (analysis.UnitGroups or
// HeadGroups) keeping the consumer's input units keep (for a head group,
// whole heads), with the consumer's new effective bias and weights (nil:
// unchanged).
func UnitCutFor(net *onnxio.Network, g *analysis.UnitGroup, keep []int, consumerB, consumerW []float64) UnitCut {
	c := UnitCut{Producer: g.Producer, Consumer: g.Consumer, Units: g.Units, Keep: keep, ConsumerB: consumerB, ConsumerW: consumerW}
	h := g.Heads
	if h == nil {
		return c
	}
	hc := &HeadCut{Heads: h.Heads, Producers: h.Producers, ProducerStride: h.ProducerStride}
	for _, j := range keep {
		if b := g.BlockOf(j); !slices.Contains(hc.KeepHeads, b) {
			hc.KeepHeads = append(hc.KeepHeads, b)
		}
	}
	slices.Sort(hc.KeepHeads)
	if len(hc.KeepHeads) < h.Heads {
		for _, s := range h.Sites {
			hc.Shapes = append(hc.Shapes, ShapeEdit{Node: s.Node, Input: s.Input, Data: s.New(h.Heads, len(hc.KeepHeads))})
		}
		for _, k := range h.ProdOps {
			hc.Values = append(hc.Values, net.Values[net.Ops[k].Out].Name)
		}
		for _, k := range h.Region {
			hc.Values = append(hc.Values, net.Values[net.Ops[k].Out].Name)
		}
	}
	c.Heads = hc
	return c
}

// dropDeadShapes removes what replacing shape inputs left unread: the
// nodes that computed or held the old values (a Constant, an Unsqueeze of
// a computed size, and what only they read), followed back from the
// replaced names, and the initializers only those nodes read. Nodes and
// initializers that were already unread in the source are left alone.
func dropDeadShapes(g *pb.GraphProto, replaced []string) {
	dead := map[int]bool{}
	var inits []string
	for len(replaced) > 0 {
		idx := onnxio.NewGraph(g)
		live := func(v string) bool {
			for _, c := range idx.Consumers[v] {
				if !dead[c] {
					return true
				}
			}
			return idx.IsOutput[v]
		}
		var next []string
		for _, v := range replaced {
			p, ok := idx.Producer[v]
			if !ok {
				if idx.Initializer[v] != nil && !live(v) {
					inits = append(inits, v)
				}
				continue
			}
			if dead[p] || slices.ContainsFunc(g.Node[p].Output, func(o string) bool { return o != "" && live(o) }) {
				continue
			}
			dead[p] = true
			next = append(next, g.Node[p].Input...)
		}
		replaced = next
	}
	if len(dead) == 0 && len(inits) == 0 {
		return
	}
	nodes := g.Node[:0:0]
	for i, n := range g.Node {
		if !dead[i] {
			nodes = append(nodes, n)
		}
	}
	g.Node = nodes
	idx := onnxio.NewGraph(g)
	keep := func(name string) bool {
		return !slices.Contains(inits, name) || len(idx.Consumers[name]) > 0 || idx.IsOutput[name]
	}
	ts := g.Initializer[:0:0]
	for _, t := range g.Initializer {
		if keep(t.GetName()) {
			ts = append(ts, t)
		}
	}
	g.Initializer = ts
	ins := g.Input[:0:0]
	for _, v := range g.Input {
		if keep(v.GetName()) {
			ins = append(ins, v)
		}
	}
	g.Input = ins
}
