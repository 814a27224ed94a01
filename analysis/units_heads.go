package analysis

import (
	"fmt"
	"math"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
)

// Attention heads are removed as blocks of units. An attention block is a
// consumer dense layer (the output projection) whose input is computed,
// through reshapes, transposes, batched MatMuls, softmax and elementwise
// ops, from the outputs of producer dense layers (a fused q/k/v
// projection, or separate ones) and from nothing else that varies along
// the heads. Head h is one digit of the element index: in a producer's
// output, unit u belongs to head (u / Stride) mod Heads; the digit is
// followed through every op of the region (a flat-order stride through
// reshapes, an axis through transposes and gathers) and must stay in
// batch axes of the MatMuls and off the softmax axis, so that slice h of
// every value depends on slice h of the producers only. Removing head h
// then removes the producers' rows of head h, the consumer's columns of
// head h (its input units with that digit, replaced by their calibration
// means as for hidden units) and shrinks the head axis of every shape on
// the way: shape constants that carry the head count are rewritten
// (ShapeSite), shapes computed from the region's own values follow by
// themselves.

// HeadInfo is the attention structure of a head group (a UnitGroup whose
// units are the consumer's inputs, removed Units/Heads at a time).
type HeadInfo struct {
	Heads     int
	Producers []*onnxio.Layer // the q/k/v projections (one when fused), graph order
	ProdOps   []int
	// ProducerStride[i]: row u of producer i belongs to head
	// (u / ProducerStride[i]) mod Heads.
	ProducerStride []int
	// ValueStride: the consumer's input unit c belongs to head
	// (c / ValueStride) mod Heads.
	ValueStride int
	// Region are the ops between the producers and the consumer, in op
	// order, and Sites the shape constants to rewrite when heads go.
	Region []int
	Sites  []ShapeSite
}

// ShapeSite is an integer input of a node that must change with the number
// of heads: the node's input at ONNX position Input is replaced by a new
// constant, Data with the elements Elems scaled by kept/Heads (or set to
// -1, to be inferred by the Reshape, when MinusOne).
type ShapeSite struct {
	Node     string
	Input    int
	Data     []int64
	Elems    []int
	MinusOne bool
}

// New is the site's new constant when kept of heads heads stay.
func (s ShapeSite) New(heads, kept int) []int64 {
	d := slices.Clone(s.Data)
	for _, e := range s.Elems {
		if s.MinusOne {
			d[e] = -1
		} else {
			d[e] = d[e] / int64(heads) * int64(kept)
		}
	}
	return d
}

// addSite records a site once (the outputs of a Split are ops of their
// own that find the same one).
func (t *headTrial) addSite(s ShapeSite) {
	for _, o := range t.sites {
		if o.Node == s.Node && o.Input == s.Input {
			return
		}
	}
	t.sites = append(t.sites, s)
}

// Block is how many of the group's units go together: the units of one
// head, or 1.
func (g *UnitGroup) Block() int {
	if g.Heads == nil {
		return 1
	}
	return g.Units / g.Heads.Heads
}

// Blocks is the number of removable blocks: heads, or units.
func (g *UnitGroup) Blocks() int {
	if g.Heads == nil {
		return g.Units
	}
	return g.Heads.Heads
}

// BlockUnits lists the units (the consumer's input indices) of block b,
// ascending.
func (g *UnitGroup) BlockUnits(b int) []int {
	if g.Heads == nil {
		return []int{b}
	}
	h := g.Heads
	var out []int
	for c := 0; c < g.Units; c++ {
		if (c/h.ValueStride)%h.Heads == b {
			out = append(out, c)
		}
	}
	return out
}

// BlockOf is the block unit j belongs to.
func (g *UnitGroup) BlockOf(j int) int {
	if g.Heads == nil {
		return j
	}
	return (j / g.Heads.ValueStride) % g.Heads.Heads
}

// ProbeInputs is a batch of two zero samples shaped as the network's
// declared inputs (dynamic dimensions 2), for finding attention heads
// without calibration data.
func ProbeInputs(net *onnxio.Network) []*Tensor {
	ins := make([]*Tensor, len(net.Inputs))
	for i, in := range net.Inputs {
		shape := make([]int, len(in.Shape))
		for k, d := range in.Shape {
			shape[k] = int(d)
			if d <= 0 || k == 0 {
				shape[k] = 2
			}
		}
		ins[i] = Zeros(shape...)
	}
	return ins
}

// HeadGroups finds the attention blocks of the network whose heads can be
// removed, running it once on probe (a small batch: the digit of a head is
// followed through the value shapes). Dense layers whose input comes from
// a batched MatMul of two computed values are the candidates; a candidate
// whose heads cannot be removed is returned with the Reason.
func HeadGroups(net *onnxio.Network, probe []*Tensor) ([]*UnitGroup, error) {
	if !net.Evaluable {
		return nil, nil
	}
	tr, err := Run(net, probe)
	if err != nil {
		return nil, fmt.Errorf("probing shapes: %w", err)
	}
	hf := newHeadFinder(net, tr)
	var out []*UnitGroup
	for ci := range net.Ops {
		op := &net.Ops[ci]
		if op.Kind != onnxio.OpDense {
			continue
		}
		prods, attn := hf.producers(ci)
		if !attn || len(prods) == 0 {
			continue
		}
		out = append(out, hf.group(ci, prods))
	}
	return out, nil
}

type headFinder struct {
	net      *onnxio.Network
	tr       *Trace
	producer []int // op producing each value, -1 for inputs and constants
	readers  [][]int
	isConst  []bool
	isOut    []bool
}

func newHeadFinder(net *onnxio.Network, tr *Trace) *headFinder {
	hf := &headFinder{net: net, tr: tr, producer: make([]int, len(net.Values)), readers: make([][]int, len(net.Values)),
		isConst: make([]bool, len(net.Values)), isOut: make([]bool, len(net.Values))}
	for i := range hf.producer {
		hf.producer[i] = -1
	}
	for i := range net.Ops {
		hf.producer[net.Ops[i].Out] = i
		for _, v := range net.Ops[i].In {
			if v >= 0 && !slices.Contains(hf.readers[v], i) {
				hf.readers[v] = append(hf.readers[v], i)
			}
		}
	}
	for _, c := range net.Consts {
		hf.isConst[c.Value] = true
	}
	for _, v := range net.Outputs {
		hf.isOut[v] = true
	}
	return hf
}

// dataInputs are the inputs of an op that carry data through it (not
// shapes, indices or slice bounds).
func dataInputs(op *onnxio.Op) []int {
	if op.Kind != onnxio.OpNode {
		return op.In
	}
	slot := func(k int) []int {
		if k < len(op.Slots) && op.Slots[k] >= 0 {
			return []int{op.In[op.Slots[k]]}
		}
		return nil
	}
	switch op.Type {
	case "Reshape", "Slice", "Gather", "Transpose", "Squeeze", "Unsqueeze", "Expand":
		return slot(0)
	case "Where":
		return append(slot(1), slot(2)...)
	case "Shape", "Size", "ConstantOfShape":
		return nil
	}
	return op.In
}

// producers walks back from consumer op ci's input through data inputs to
// the dense layers whose outputs feed it, and tells whether a MatMul of
// two computed values (attention) is on the way.
func (hf *headFinder) producers(ci int) (prods []int, attn bool) {
	seen := map[int]bool{}
	stack := []int{hf.net.Ops[ci].In[0]}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[v] {
			continue
		}
		seen[v] = true
		p := hf.producer[v]
		if p < 0 {
			continue
		}
		op := &hf.net.Ops[p]
		if op.Kind == onnxio.OpDense {
			if !slices.Contains(prods, p) {
				prods = append(prods, p)
			}
			continue
		}
		if op.Kind == onnxio.OpNode && op.Type == "MatMul" && len(op.In) == 2 && !hf.isConst[op.In[0]] && !hf.isConst[op.In[1]] {
			attn = true
		}
		stack = append(stack, dataInputs(op)...)
	}
	slices.Sort(prods)
	return prods, attn
}

// digit is where the head index sits in a value: along axis Axis, index
// i = (o * Heads + h) * Inner + r.
type digit struct{ axis, inner int }

// headTrial is the walk of one candidate head count.
type headTrial struct {
	hf     *headFinder
	heads  int
	state  map[int]digit
	region []int
	sites  []ShapeSite
	reason string
	steps  int // ops accepted, to report the most plausible failure
	attn   bool
	vstr   int
}

// group tries every head count that divides the consumer's input width,
// largest first, and returns the first that works (the finest split into
// independent heads), or the failure of the trial that went furthest.
func (hf *headFinder) group(ci int, prods []int) *UnitGroup {
	cons := hf.net.Ops[ci].Layer
	g := &UnitGroup{Producer: hf.net.Ops[prods[0]].Layer, Consumer: cons, ProdOp: prods[0], ConsOp: ci,
		Value: hf.net.Ops[ci].In[0], Units: cons.In}
	fail := func(r string) *UnitGroup {
		g.Reason, g.Consumer, g.ConsOp = "heads: "+r, nil, -1
		return g
	}
	for _, p := range prods {
		if l := hf.net.Ops[p].Layer; !l.Prunable {
			return fail(fmt.Sprintf("the projection %s cannot be rewritten: %s", l.Name, l.Reason))
		} else if l.Tie != nil {
			return fail(fmt.Sprintf("the projection %s cannot be rewritten: its weight %s is tied to other readers, which would lose the heads too", l.Name, l.Tie.Init))
		}
	}
	if !cons.Prunable {
		return fail(fmt.Sprintf("the output projection %s cannot be rewritten: %s", cons.Name, cons.Reason))
	} else if cons.Tie != nil {
		return fail(fmt.Sprintf("the output projection %s cannot be rewritten: its weight %s is tied to other readers, which would lose the heads too", cons.Name, cons.Tie.Init))
	}
	var best *headTrial
	for h := cons.In / 2; h >= 2; h-- {
		if cons.In%h != 0 {
			continue
		}
		t := &headTrial{hf: hf, heads: h, state: map[int]digit{}}
		t.reason = t.walk(ci, prods)
		if t.reason == "" {
			info := &HeadInfo{Heads: h, Region: t.region, Sites: t.sites, ValueStride: t.vstr}
			for _, p := range prods {
				info.Producers = append(info.Producers, hf.net.Ops[p].Layer)
				info.ProdOps = append(info.ProdOps, p)
				info.ProducerStride = append(info.ProducerStride, cons.In/h)
			}
			g.Heads = info
			return g
		}
		if best == nil || t.steps > best.steps {
			best = t
		}
	}
	if best == nil {
		return fail("the output projection has too few inputs to split into heads")
	}
	return fail(best.reason)
}

func prod(s []int) int {
	p := 1
	for _, d := range s {
		p *= d
	}
	return p
}

func (t *headTrial) shape(v int) []int { return t.hf.tr.Values[v].Shape }

// walk follows the head digit from the producers to consumer ci and
// returns why the heads are not separable ("" when they are).
func (t *headTrial) walk(ci int, prods []int) string {
	net := t.hf.net
	cons := net.Ops[ci].Layer
	q0 := cons.In / t.heads
	for _, p := range prods {
		v := net.Ops[p].Out
		s := t.shape(v)
		if len(s) == 0 || s[len(s)-1]%(t.heads*q0) != 0 {
			return fmt.Sprintf("%s's %d outputs do not split into %d heads of %d", net.Ops[p].Layer.Name, net.Ops[p].Layer.Out, t.heads, q0)
		}
		t.state[v] = digit{len(s) - 1, q0}
	}
	reached := false
	for r := prods[0] + 1; r < len(net.Ops); r++ {
		op := &net.Ops[r]
		if slices.Contains(prods, r) {
			for _, in := range op.In {
				if _, ok := t.state[in]; ok {
					return fmt.Sprintf("the projection %s reads another projection's heads", op.Layer.Name)
				}
			}
			continue
		}
		var inRegion []int
		for _, in := range op.In {
			if _, ok := t.state[in]; ok && !slices.Contains(inRegion, in) {
				inRegion = append(inRegion, in)
			}
		}
		if len(inRegion) == 0 {
			continue
		}
		if op.Kind == onnxio.OpNode && (op.Type == "Shape" || op.Type == "Size") {
			continue // shape arithmetic follows the region's sizes
		}
		if r == ci {
			d := t.state[op.In[0]]
			s := t.shape(op.In[0])
			if d.axis != len(s)-1 {
				return fmt.Sprintf("the heads reach %s outside its input axis", cons.Name)
			}
			t.vstr, reached = d.inner, true
			continue
		}
		if reached {
			return "ops after the output projection read the heads' values"
		}
		d, why := t.step(op, inRegion)
		if why != "" {
			return why
		}
		t.state[op.Out] = d
		t.region = append(t.region, r)
		t.steps++
	}
	if !reached {
		return fmt.Sprintf("the heads do not reach %s", cons.Name)
	}
	if !t.attn {
		return "no attention MatMul between the projections and the output projection"
	}
	for v := range t.state {
		if t.hf.isOut[v] {
			return fmt.Sprintf("value %s is a graph output", net.Values[v].Name)
		}
	}
	if len(t.hf.readers[net.Ops[ci].In[0]]) != 1 {
		for _, rd := range t.hf.readers[net.Ops[ci].In[0]] {
			if o := &net.Ops[rd]; rd != ci && !(o.Kind == onnxio.OpNode && o.Type == "Shape") {
				return fmt.Sprintf("the output projection's input is read by %s (node %s) too", o, o.Node)
			}
		}
	}
	slices.SortFunc(t.sites, func(a, b ShapeSite) int {
		if a.Node != b.Node {
			if a.Node < b.Node {
				return -1
			}
			return 1
		}
		return a.Input - b.Input
	})
	return ""
}

var elementwiseNodes = map[string]bool{
	"Sqrt": true, "Exp": true, "Neg": true, "Abs": true, "Reciprocal": true, "Log": true, "Dropout": true,
	"Identity": true, "Cast": true, "Pow": true, "Where": true, "Max": true, "Min": true, "Add": true, "Sub": true,
	"Mul": true, "Div": true, "Relu": true, "Tanh": true, "Sigmoid": true, "Erf": true, "Gelu": true,
}

// step is the digit of op's output, given that the values inRegion carry
// heads.
func (t *headTrial) step(op *onnxio.Op, inRegion []int) (digit, string) {
	mixes := func() (digit, string) {
		return digit{}, fmt.Sprintf("%s (node %s) mixes heads", op, op.Node)
	}
	outS := t.shape(op.Out)
	d0 := t.state[inRegion[0]]
	in0 := inRegion[0]
	switch {
	case op.Kind == onnxio.OpDense:
		return digit{}, fmt.Sprintf("dense layer %s reads the heads' values", op.Layer.Name)
	case op.Kind == onnxio.OpSoftmax || op.Kind == onnxio.OpLogSoftmax:
		r := len(t.shape(in0))
		ax := op.Axis
		if ax < 0 {
			ax += r
		}
		if op.Opset < 13 && d0.axis >= ax || d0.axis == ax {
			return digit{}, fmt.Sprintf("%s (node %s) normalises over the heads", op, op.Node)
		}
		return d0, ""
	case op.Kind == onnxio.OpReshape || op.Kind == onnxio.OpFlatten || op.Kind == onnxio.OpSqueeze || op.Kind == onnxio.OpUnsqueeze ||
		op.Kind == onnxio.OpNode && (op.Type == "Reshape" || op.Type == "Flatten" || op.Type == "Squeeze" || op.Type == "Unsqueeze"):
		if len(inRegion) != 1 || dataInputs(op)[0] != in0 {
			return mixes()
		}
		return t.reshape(op, in0, d0, outS)
	case op.Kind == onnxio.OpNode && op.Type == "Transpose":
		perm := op.AttrInts("perm")
		r := len(t.shape(in0))
		if perm == nil {
			for i := r - 1; i >= 0; i-- {
				perm = append(perm, int64(i))
			}
		}
		for i, p := range perm {
			if int(p) == d0.axis {
				return digit{i, d0.inner}, ""
			}
		}
		return mixes()
	case op.Kind == onnxio.OpNode && op.Type == "Gather":
		if len(inRegion) != 1 || dataInputs(op)[0] != in0 {
			return mixes()
		}
		r := len(t.shape(in0))
		ax := int(op.AttrInt("axis", 0))
		if ax < 0 {
			ax += r
		}
		if ax == d0.axis {
			return digit{}, fmt.Sprintf("%s (node %s) gathers along the heads", op, op.Node)
		}
		if d0.axis < ax {
			return d0, ""
		}
		idx := t.shape(op.In[op.Slots[1]])
		return digit{d0.axis - 1 + len(idx), d0.inner}, ""
	case op.Kind == onnxio.OpNode && op.Type == "Slice":
		if len(inRegion) != 1 || dataInputs(op)[0] != in0 {
			return mixes()
		}
		return d0, t.slice(op, in0, d0)
	case op.Kind == onnxio.OpNode && op.Type == "Split":
		if len(inRegion) != 1 || op.Slots[0] < 0 || op.In[op.Slots[0]] != in0 {
			return mixes()
		}
		return d0, t.split(op, in0, d0)
	case op.Kind == onnxio.OpNode && op.Type == "MatMul":
		if len(op.In) != 2 {
			return mixes()
		}
		a, b := op.In[0], op.In[1]
		da, oka := t.state[a]
		db, okb := t.state[b]
		if !oka || !okb {
			return digit{}, fmt.Sprintf("MatMul (node %s) multiplies the heads' values by another tensor", op.Node)
		}
		ra, rb, R := len(t.shape(a)), len(t.shape(b)), len(outS)
		if da.axis > ra-3 || db.axis > rb-3 {
			return digit{}, fmt.Sprintf("MatMul (node %s) contracts over the heads", op.Node)
		}
		oa, ob := da.axis+R-ra, db.axis+R-rb
		if oa != ob || da.inner != db.inner || t.shape(a)[da.axis] != t.shape(b)[db.axis] {
			return digit{}, fmt.Sprintf("MatMul (node %s) pairs different heads", op.Node)
		}
		t.attn = true
		return digit{oa, da.inner}, ""
	case op.Kind == onnxio.OpNode && elementwiseNodes[op.Type] || op.Kind != onnxio.OpNode && op.Kind != onnxio.OpBatchNorm:
		return t.elementwise(op, outS)
	}
	return mixes()
}

// elementwise checks a broadcasting op: every operand with heads has the
// digit at the same (right-aligned) axis; the others are constant along
// it.
func (t *headTrial) elementwise(op *onnxio.Op, outS []int) (digit, string) {
	R := len(outS)
	var d digit
	set := false
	check := func(s []int, has bool, dd digit) string {
		if has {
			a := dd.axis + R - len(s)
			if set && (a != d.axis || dd.inner != d.inner) || s[dd.axis] != outS[a] {
				return fmt.Sprintf("%s (node %s) combines different heads", op, op.Node)
			}
			d, set = digit{a, dd.inner}, true
			return ""
		}
		return ""
	}
	var others [][]int
	for _, in := range dataInputs(op) {
		dd, has := t.state[in]
		if !has {
			others = append(others, t.shape(in))
			continue
		}
		if why := check(t.shape(in), true, dd); why != "" {
			return digit{}, why
		}
	}
	if !set {
		return digit{}, fmt.Sprintf("%s (node %s) reads the heads' values other than as data", op, op.Node)
	}
	if op.Const != nil {
		others = append(others, op.Const.Shape)
	}
	if op.Kind == onnxio.OpNode && op.Type == "Where" && op.Slots[0] >= 0 {
		others = append(others, t.shape(op.In[op.Slots[0]])) // the condition
	}
	for _, s := range others {
		if k := d.axis - (R - len(s)); k >= 0 && k < len(s) && s[k] != 1 {
			return digit{}, fmt.Sprintf("%s (node %s) adds a tensor that differs between heads", op, op.Node)
		}
	}
	return d, ""
}

// reshape follows the digit through a reshape by its flat stride, and
// records the shape constant to rewrite when the head axis's size is
// given by one.
func (t *headTrial) reshape(op *onnxio.Op, in int, d digit, outS []int) (digit, string) {
	inS := t.shape(in)
	stride := d.inner * prod(inS[d.axis+1:])
	k := -1
	var inner int
	for a := len(outS) - 1; a >= 0; a-- {
		below := prod(outS[a+1:])
		if stride%below == 0 && outS[a]%((stride/below)*t.heads) == 0 {
			k, inner = a, stride/below
			break
		}
		if below > stride {
			break
		}
	}
	if k < 0 {
		return digit{}, fmt.Sprintf("%s (node %s) splits a head across axes", op, op.Node)
	}
	nd := digit{k, inner}
	if op.Kind != onnxio.OpReshape && !(op.Kind == onnxio.OpNode && op.Type == "Reshape") {
		return nd, "" // the output shape is computed from the input's
	}
	var target []int64
	if op.Kind == onnxio.OpReshape {
		target = op.Shape
	} else {
		sv := op.In[op.Slots[1]]
		for _, x := range t.hf.tr.Values[sv].Data {
			target = append(target, int64(x))
		}
	}
	if len(target) != len(outS) {
		return digit{}, fmt.Sprintf("Reshape (node %s): target %v for shape %v", op.Node, target, outS)
	}
	for p, x := range target {
		if x == 0 && !op.AllowZero && op.AttrInt("allowzero", 0) == 0 && p == d.axis && p != k {
			return digit{}, fmt.Sprintf("Reshape (node %s) copies the head axis to another axis", op.Node)
		}
	}
	switch x := target[k]; {
	case x == -1:
		return nd, "" // inferred
	case x == 0 && k == d.axis && inner == d.inner:
		return nd, "" // copied from the input's head axis
	case x == 0:
		return digit{}, fmt.Sprintf("Reshape (node %s) copies a dimension into the head axis", op.Node)
	}
	if op.Kind == onnxio.OpReshape {
		t.addSite(ShapeSite{Node: op.Node, Input: 1, Data: target, Elems: []int{k}})
		return nd, ""
	}
	minusOne := !slices.Contains(target, -1)
	if why := t.resolve(op, 1, op.In[op.Slots[1]], k, minusOne); why != "" {
		return digit{}, fmt.Sprintf("Reshape (node %s): %s", op.Node, why)
	}
	return nd, ""
}

// resolve finds how element k of integer value v, input ONNX position pos
// of op, follows the head count: a constant is rewritten, a Concat is
// followed to the piece holding k, a value computed from the region's own
// shapes follows by itself, and another computed element of a Reshape
// target becomes -1 (minusOne) when nothing else is inferred.
func (t *headTrial) resolve(op *onnxio.Op, pos, v, k int, minusOne bool) string {
	if t.hf.isConst[v] {
		var data []int64
		for _, x := range t.hf.tr.Values[v].Data {
			data = append(data, int64(x))
		}
		if k >= len(data) || data[k]%int64(t.heads) != 0 {
			return fmt.Sprintf("constant %s does not hold a head count", t.hf.net.Values[v].Name)
		}
		t.addSite(ShapeSite{Node: op.Node, Input: pos, Data: data, Elems: []int{k}})
		return ""
	}
	p := t.hf.producer[v]
	if p >= 0 {
		c := &t.hf.net.Ops[p]
		if c.Kind == onnxio.OpNode && c.Type == "Concat" && c.AttrInt("axis", 0) == 0 && t.onlyHeadReshapes(v) {
			off := 0
			for sl, ix := range c.Slots {
				if ix < 0 {
					continue
				}
				piece := c.In[ix]
				n := t.hf.tr.Values[piece].Len()
				if k < off+n {
					return t.resolve(c, sl, piece, k-off, minusOne && n == 1)
				}
				off += n
			}
		}
	}
	// Only now: a Concat's other pieces may come from the region's shapes
	// while the one that holds the head count does not.
	if t.fromRegionShape(v, map[int]bool{}) {
		return ""
	}
	if minusOne && t.hf.tr.Values[v].Len() == 1 {
		t.addSite(ShapeSite{Node: op.Node, Input: pos, Data: []int64{int64(t.hf.tr.Values[v].Data[0])}, Elems: []int{0}, MinusOne: true})
		return ""
	}
	return fmt.Sprintf("the head count is in a computed shape (%s) that cannot be rewritten", t.hf.net.Values[v].Name)
}

// onlyHeadReshapes tells whether every reader of shape value v is a
// Reshape of a value with heads (or of a sibling output of a Split that
// has them), so that rewriting v changes nothing else.
func (t *headTrial) onlyHeadReshapes(v int) bool {
	for _, r := range t.hf.readers[v] {
		op := &t.hf.net.Ops[r]
		if op.Kind != onnxio.OpNode || op.Type != "Reshape" || op.Slots[0] < 0 || op.In[op.Slots[0]] == v {
			return false
		}
		in := op.In[op.Slots[0]]
		if _, ok := t.state[in]; ok {
			continue
		}
		p := t.hf.producer[in]
		if p < 0 || t.hf.net.Ops[p].Type != "Split" || !slices.ContainsFunc(t.hf.net.Ops[p].In, func(x int) bool { _, ok := t.state[x]; return ok }) {
			return false
		}
	}
	return true
}

// fromRegionShape tells whether integer value v is computed from the shape
// of a value carrying heads (it then follows their count by itself).
func (t *headTrial) fromRegionShape(v int, seen map[int]bool) bool {
	if seen[v] {
		return false
	}
	seen[v] = true
	p := t.hf.producer[v]
	if p < 0 {
		return false
	}
	op := &t.hf.net.Ops[p]
	if op.Kind == onnxio.OpNode && op.Type == "Shape" {
		_, ok := t.state[op.In[0]]
		return ok
	}
	for _, in := range op.In {
		if t.fromRegionShape(in, seen) {
			return true
		}
	}
	return false
}

// split checks a Split of a value with heads: along the head axis every
// piece must hold whole groups of heads, and the sizes follow the head
// count (equal pieces, or a constant sizes input, which is rewritten).
func (t *headTrial) split(op *onnxio.Op, in int, d digit) string {
	inS := t.shape(in)
	ax := int(op.AttrInt("axis", 0))
	if ax < 0 {
		ax += len(inS)
	}
	if ax != d.axis {
		return ""
	}
	block := t.heads * d.inner
	if op.HasAttr("split") {
		return fmt.Sprintf("Split (node %s) has its sizes in an attribute", op.Node)
	}
	if len(op.Slots) > 1 && op.Slots[1] >= 0 {
		sv := op.In[op.Slots[1]]
		if !t.hf.isConst[sv] {
			return fmt.Sprintf("Split (node %s) has computed sizes", op.Node)
		}
		var data []int64
		var elems []int
		for i, x := range t.hf.tr.Values[sv].Data {
			if int(x)%block != 0 {
				return fmt.Sprintf("Split (node %s) cuts through a head", op.Node)
			}
			data = append(data, int64(x))
			elems = append(elems, i)
		}
		t.addSite(ShapeSite{Node: op.Node, Input: 1, Data: data, Elems: elems})
		return ""
	}
	n := op.Outputs
	if n <= 0 || inS[ax]%n != 0 || (inS[ax]/n)%block != 0 {
		return fmt.Sprintf("Split (node %s) cuts through a head", op.Node)
	}
	return ""
}

// slice checks a Slice of a value with heads: bounds along the head axis
// must cut whole groups of heads and follow the head count.
func (t *headTrial) slice(op *onnxio.Op, in int, d digit) string {
	inS := t.shape(in)
	r := len(inS)
	get := func(slot int) []int64 {
		if slot >= len(op.Slots) || op.Slots[slot] < 0 {
			return nil
		}
		var out []int64
		for _, x := range t.hf.tr.Values[op.In[op.Slots[slot]]].Data {
			out = append(out, int64(x))
		}
		return out
	}
	if len(op.Slots) < 3 {
		if op.HasAttr("axes") || op.HasAttr("starts") {
			for _, a := range op.AttrInts("axes") {
				if int(a) == d.axis || int(a)+r == d.axis {
					return fmt.Sprintf("Slice (node %s) cuts the head axis with fixed bounds", op.Node)
				}
			}
			if op.AttrInts("axes") == nil {
				return fmt.Sprintf("Slice (node %s) cuts the head axis with fixed bounds", op.Node)
			}
		}
		return ""
	}
	starts, ends, axes, steps := get(1), get(2), get(3), get(4)
	for i := range starts {
		a := i
		if axes != nil {
			a = int(axes[i])
		}
		if a < 0 {
			a += r
		}
		if a != d.axis {
			continue
		}
		if steps != nil && steps[i] != 1 {
			return fmt.Sprintf("Slice (node %s) steps through the heads", op.Node)
		}
		size := int64(inS[a])
		block := int64(t.heads * d.inner)
		for j, b := range []int64{starts[i], ends[i]} {
			if b < 0 {
				b += size
			}
			b = max(0, min(b, size))
			if b%block != 0 {
				return fmt.Sprintf("Slice (node %s) cuts through a head", op.Node)
			}
			if b == 0 || b == size && j == 1 && (ends[i] >= size) && t.hf.isConst[op.In[op.Slots[2]]] && ends[i] > size {
				continue // 0, or past the end: stays valid
			}
			if why := t.resolve(op, 1+j, op.In[op.Slots[1+j]], i, false); why != "" {
				return fmt.Sprintf("Slice (node %s): %s", op.Node, why)
			}
		}
	}
	return ""
}

// headScores scores each head of a head group with a unit criterion, on
// the scale of the unit scores summed over the head's units: ec is the
// first-order output error of the head's units replaced together by their
// means (the head's block of the pair matrix), ec-nocomp the same with
// zeros; magnitude is the root-mean-square norm of the head's q/k/v rows
// times the head's units, wanda that times the root-mean-square norm of
// the head's outputs, random a uniform number times the head's units.
func headScores(st *UnitStats, gs *UnitGroupStats, method string, rng interface{ Float64() float64 }) []float64 {
	g := gs.Group
	hi := g.Heads
	out := make([]float64, hi.Heads)
	size := float64(g.Block())
	var m []float64
	switch method {
	case "ec", "ec-nocomp":
		delta := make([]float64, g.Units)
		for j := range delta {
			if method == "ec" {
				delta[j] = gs.A1[j] / float64(gs.Rows)
			} else {
				delta[j] = -gs.Shift[j]
			}
		}
		m = gs.pairsAround(st.N, delta)
	}
	for b := range out {
		units := g.BlockUnits(b)
		switch method {
		case "ec", "ec-nocomp":
			var s float64
			for _, j := range units {
				for _, k := range units {
					s += m[j*g.Units+k]
				}
			}
			out[b] = max(0, s)
		case "magnitude", "wanda":
			var ss float64
			rows := 0
			for i, l := range hi.Producers {
				for u := 0; u < l.Out; u++ {
					if (u/hi.ProducerStride[i])%hi.Heads != b {
						continue
					}
					rows++
					for q := u * l.In; q < (u+1)*l.In; q++ {
						w := l.At(q)
						ss += w * w
					}
				}
			}
			out[b] = math.Sqrt(ss/float64(max(1, rows))) * size
			if method == "wanda" {
				var aa float64
				for _, j := range units {
					c := gs.Shift[j]
					aa += max(0, gs.A2[j]+2*c*gs.A1[j]+c*c*float64(gs.Rows))
				}
				out[b] *= math.Sqrt(aa / size)
			}
		case "random":
			out[b] = rng.Float64() * size
		}
	}
	return out
}

// RemovableGroups is every removable group of the network: the hidden
// units of UnitGroups and the attention heads of HeadGroups (probe: a
// small input batch), and why the others' units cannot be removed. The
// q/k/v projections of removable heads are not listed as fixed: their
// units go as heads.
func RemovableGroups(net *onnxio.Network, probe []*Tensor) (groups []*UnitGroup, fixed []string, err error) {
	heads, err := HeadGroups(net, probe)
	if err != nil {
		return nil, nil, err
	}
	asHeads := map[*onnxio.Layer]bool{}
	for _, g := range heads {
		if g.Removable() {
			for _, l := range g.Heads.Producers {
				asHeads[l] = true
			}
		}
	}
	for _, g := range UnitGroups(net) {
		switch {
		case g.Removable():
			groups = append(groups, g)
		case !asHeads[g.Producer]:
			fixed = append(fixed, g.Name()+": "+g.Reason)
		}
	}
	for _, g := range heads {
		if g.Removable() {
			groups = append(groups, g)
		} else {
			fixed = append(fixed, g.Name()+": "+g.Reason)
		}
	}
	slices.SortStableFunc(groups, func(a, b *UnitGroup) int { return a.ProdOp - b.ProdOp })
	return groups, fixed, nil
}
