package export

import (
	"encoding/json"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// UnitCut removes hidden units between a producer and a consumer dense
// layer: the producer's rows and bias entries of the removed units, their
// entries in every per-unit parameter in between (BatchNormalization,
// PRelu slopes, bias-like Add/Sub/Mul/Div constants) and the consumer's
// columns. The result is a smaller dense model.
type UnitCut struct {
	Producer, Consumer *onnxio.Layer // from onnxio.Extract on the same model
	Units              int           // the producer's Out
	Keep               []int         // kept units, ascending, at least one
	// ConsumerB is the consumer's new effective bias (its Out values),
	// or nil to keep it.
	ConsumerB []float64
	// ConsumerW is the consumer's new effective weights (Out x In, the
	// removed columns ignored), or nil to keep its kept columns as stored.
	ConsumerW []float64
	// Heads, when set, makes the cut the removal of attention heads
	// (Producer is then ignored: the projections are in Heads).
	Heads *HeadCut
}

// unitEdit is what happens to one layer: rows and columns kept (nil: all)
// and its new effective bias before the rows are sliced (nil: unchanged).
type unitEdit struct {
	l          *onnxio.Layer
	rows, cols []int
	b          []float64
	w          []float64 // new effective weights, Out x In, or nil
}

// perUnitUnary are the ONNX ops that act on each element alone.
var perUnitUnary = map[string]bool{
	"Relu": true, "LeakyRelu": true, "Tanh": true, "Sigmoid": true, "HardSigmoid": true, "HardSwish": true,
	"Elu": true, "Selu": true, "Softplus": true, "Gelu": true, "Erf": true, "Identity": true, "Dropout": true, "Cast": true,
}

// ApplyUnits writes cuts into a copy of m (see Apply for how the copy
// relates to m). Every tensor not named by a cut is untouched; the sliced
// ones keep their element type, storage field and names. Cuts must be of
// distinct producers, from a network extracted from m.
func ApplyUnits(m *onnxio.Model, cuts []UnitCut, opt Options) (*onnxio.Model, error) {
	if opt.Metadata != "" && !json.Valid([]byte(opt.Metadata)) {
		return nil, fmt.Errorf("export: metadata is not valid JSON")
	}
	out := *m
	out.Proto = onnxio.CloneSharingData(m.Proto)
	out.Warnings = append([]string(nil), m.Warnings...)
	e := newEditor(&out, Dense, opt.AddBias)
	edits := map[*onnxio.Layer]*unitEdit{}
	var order []*onnxio.Layer
	edit := func(l *onnxio.Layer) *unitEdit {
		if ed, ok := edits[l]; ok {
			return ed
		}
		ed := &unitEdit{l: l}
		edits[l] = ed
		order = append(order, l)
		return ed
	}
	var replacedShapes []string // shape inputs of head cuts, whose old producers may be dead
	for _, c := range cuts {
		if len(c.Keep) == c.Units && c.ConsumerB == nil {
			continue // nothing removed: every tensor stays as it is
		}
		if c.Heads != nil {
			if err := e.cutHeads(c, edit, &replacedShapes); err != nil {
				return nil, fmt.Errorf("export: heads of %s: %w", c.Consumer.Name, err)
			}
			continue
		}
		if c.Producer == nil || c.Consumer == nil {
			return nil, fmt.Errorf("export: a unit cut has no producer or consumer")
		}
		if c.Units != c.Producer.Out || c.Units != c.Consumer.In {
			return nil, fmt.Errorf("export: units of %s: %d units between %dx%d and %dx%d layers", c.Producer.Name, c.Units,
				c.Producer.Out, c.Producer.In, c.Consumer.Out, c.Consumer.In)
		}
		if len(c.Keep) == 0 {
			return nil, fmt.Errorf("export: units of %s: every unit removed, which would remove the layer", c.Producer.Name)
		}
		if !slices.IsSorted(c.Keep) || c.Keep[0] < 0 || c.Keep[len(c.Keep)-1] >= c.Units || len(slices.Compact(slices.Clone(c.Keep))) != len(c.Keep) {
			return nil, fmt.Errorf("export: units of %s: kept units are not ascending distinct indices below %d", c.Producer.Name, c.Units)
		}
		p, q := edit(c.Producer), edit(c.Consumer)
		if p.rows != nil {
			return nil, fmt.Errorf("export: units of %s are cut twice", c.Producer.Name)
		}
		if c.ConsumerB != nil {
			if err := checkValues("consumer bias", c.ConsumerB, c.Consumer.Out); err != nil {
				return nil, fmt.Errorf("export: units of %s: %w", c.Producer.Name, err)
			}
		}
		if c.ConsumerW != nil {
			if err := checkValues("consumer weights", c.ConsumerW, c.Consumer.Out*c.Consumer.In); err != nil {
				return nil, fmt.Errorf("export: units of %s: %w", c.Producer.Name, err)
			}
		}
		p.rows, q.cols, q.b, q.w = c.Keep, c.Keep, c.ConsumerB, c.ConsumerW
		if err := e.cutPath(&out, c); err != nil {
			return nil, fmt.Errorf("export: units of %s: %w", c.Producer.Name, err)
		}
	}
	for _, l := range order {
		if err := e.applyUnitEdit(&out, edits[l]); err != nil {
			return nil, fmt.Errorf("export: layer %s: %w", l.Name, err)
		}
	}
	e.finish()
	dropDeadShapes(out.Proto.GetGraph(), replacedShapes)
	if opt.Metadata != "" {
		setMetadata(out.Proto, MetadataKey, opt.Metadata)
	}
	return &out, nil
}

// cutHeads records the edits of a head cut: the projections' rows, the
// output projection's columns and bias, the shape constants.
func (e *editor) cutHeads(c UnitCut, edit func(*onnxio.Layer) *unitEdit, replaced *[]string) error {
	if c.Consumer == nil {
		return fmt.Errorf("a head cut has no output projection")
	}
	if c.Units != c.Consumer.In {
		return fmt.Errorf("%d units into a %dx%d layer", c.Units, c.Consumer.Out, c.Consumer.In)
	}
	if err := c.checkHeads(); err != nil {
		return err
	}
	if len(c.Keep) == 0 || !slices.IsSorted(c.Keep) || c.Keep[len(c.Keep)-1] >= c.Units {
		return fmt.Errorf("kept units are not ascending indices below %d", c.Units)
	}
	for _, v := range []struct {
		name string
		vals []float64
		n    int
	}{{"consumer bias", c.ConsumerB, c.Consumer.Out}, {"consumer weights", c.ConsumerW, c.Consumer.Out * c.Consumer.In}} {
		if v.vals != nil {
			if err := checkValues(v.name, v.vals, v.n); err != nil {
				return err
			}
		}
	}
	for i, l := range c.Heads.Producers {
		p := edit(l)
		if p.rows != nil {
			return fmt.Errorf("projection %s is cut twice", l.Name)
		}
		p.rows = c.Heads.headRows(i)
	}
	q := edit(c.Consumer)
	if q.cols != nil {
		return fmt.Errorf("output projection %s is cut twice", c.Consumer.Name)
	}
	q.cols, q.b, q.w = c.Keep, c.ConsumerB, c.ConsumerW
	r, err := e.applyShapeEdits(c.Heads.Shapes)
	if err != nil {
		return err
	}
	*replaced = append(*replaced, r...)
	e.dropDeclared(c.Heads.Values)
	return nil
}

// producerOutput is the value holding a layer's z = W a + b.
func (e *editor) producerOutput(l *onnxio.Layer) (string, error) {
	if l.MainIdx < 0 || l.MainIdx >= len(e.g.Node) || e.nodeLabel(l.MainIdx) != l.Node {
		return "", fmt.Errorf("node %s not found at index %d: the layer is not from this model", l.Node, l.MainIdx)
	}
	idx := l.MainIdx
	if l.AddIdx >= 0 {
		if l.AddIdx >= len(e.g.Node) || e.g.Node[l.AddIdx].GetOpType() != "Add" {
			return "", fmt.Errorf("bias Add node index %d does not match: the layer is not from this model", l.AddIdx)
		}
		idx = l.AddIdx
	}
	if len(e.g.Node[idx].Output) == 0 {
		return "", fmt.Errorf("node %s has no output", e.nodeLabel(idx))
	}
	return e.g.Node[idx].Output[0], nil
}

// cutPath walks the per-unit region from the producer's output to the
// consumer's input, slicing the per-unit parameters of its nodes and the
// declared shapes of its values.
func (e *editor) cutPath(m *onnxio.Model, c UnitCut) error {
	start, err := e.producerOutput(c.Producer)
	if err != nil {
		return err
	}
	h, kept := int64(c.Units), int64(len(c.Keep))
	// The MatMul's own output, before its bias Add, has the units too.
	e.setDeclaredLastDim(e.g.Node[c.Producer.MainIdx].Output[0], h, kept)
	e.setDeclaredLastDim(start, h, kept)
	// Nodes are in topological order (as ONNX requires): one scan sees
	// both inputs of a node joining two branches of the region (GELU's
	// x * Phi(x)) before the node.
	region := map[string]bool{start: true}
	reached := false
	for ni, n := range e.g.Node {
		reads := false
		for _, in := range n.Input {
			reads = reads || region[in]
		}
		if !reads {
			continue
		}
		if ni == c.Consumer.MainIdx {
			if len(n.Input) == 0 || !region[n.Input[0]] || slices.ContainsFunc(n.Input[1:], func(s string) bool { return region[s] }) {
				return fmt.Errorf("node %s reads the units other than as its data input", e.nodeLabel(ni))
			}
			reached = true
			continue
		}
		if reached {
			return fmt.Errorf("node %s reads the units after node %s", e.nodeLabel(ni), c.Consumer.Node)
		}
		if err := e.cutNode(m, ni, region, h, c.Keep); err != nil {
			return err
		}
		if len(n.Output) == 0 || n.Output[0] == "" {
			return fmt.Errorf("node %s has no output", e.nodeLabel(ni))
		}
		for _, o := range n.Output[1:] {
			if o != "" && (len(e.idx.Consumers[o]) > 0 || e.idx.IsOutput[o]) {
				return fmt.Errorf("node %s: its output %s is used", e.nodeLabel(ni), o)
			}
		}
		region[n.Output[0]] = true
		e.setDeclaredLastDim(n.Output[0], h, kept)
	}
	for v := range region {
		if e.idx.IsOutput[v] {
			return fmt.Errorf("value %s is a graph output", v)
		}
	}
	if !reached {
		return fmt.Errorf("the units do not reach node %s", c.Consumer.Node)
	}
	return nil
}

// cutNode slices the per-unit parameters of one node of the region.
func (e *editor) cutNode(m *onnxio.Model, ni int, region map[string]bool, h int64, keep []int) error {
	n := e.g.Node[ni]
	op := n.GetOpType()
	var params []string // inputs that hold per-unit (or scalar) parameters
	switch {
	case perUnitUnary[op]:
		// Dropout's ratio and training_mode are scalars, not parameters.
		if !region[n.Input[0]] {
			return fmt.Errorf("node %s (%s) reads the units other than as its input", e.nodeLabel(ni), op)
		}
	case op == "PRelu" || op == "BatchNormalization":
		if !region[n.Input[0]] {
			return fmt.Errorf("node %s (%s) reads the units other than as its input", e.nodeLabel(ni), op)
		}
		params = n.Input[1:]
	case op == "Add" || op == "Sub" || op == "Mul" || op == "Div":
		for _, in := range n.Input {
			if !region[in] {
				params = append(params, in)
			}
		}
	default:
		return fmt.Errorf("node %s (%s) between the layers is not per unit", e.nodeLabel(ni), op)
	}
	for _, name := range params {
		if name == "" {
			continue
		}
		if err := e.cutParam(m, ni, name, h, keep); err != nil {
			return fmt.Errorf("node %s: %w", e.nodeLabel(ni), err)
		}
	}
	return nil
}

// cutParam slices a per-unit parameter (an initializer or a Constant
// node's value, possibly behind Identity nodes) along its last axis, which
// holds h units; a scalar stays. A parameter this node alone reads is
// replaced in place; a shared one gets a sliced private copy for it.
func (e *editor) cutParam(m *onnxio.Model, ni int, name string, h int64, keep []int) error {
	src := name
	var t *pb.TensorProto
	var attr *pb.AttributeProto
	for t == nil {
		if init := e.idx.Initializer[src]; init != nil {
			t = init
			break
		}
		p, ok := e.idx.Producer[src]
		if !ok {
			return fmt.Errorf("parameter %s is not a constant", name)
		}
		switch pn := e.g.Node[p]; pn.GetOpType() {
		case "Constant":
			attr = onnxio.Attr(pn, "value")
			if attr == nil || attr.T == nil {
				return fmt.Errorf("parameter %s is a Constant without a tensor value", name)
			}
			t = attr.T
		case "Identity":
			src = pn.Input[0]
		default:
			return fmt.Errorf("parameter %s is not a constant", name)
		}
	}
	dims := t.GetDims()
	numel := onnxio.NumElements(dims)
	if numel == 1 {
		return nil
	}
	if len(dims) == 0 || dims[len(dims)-1] != h || numel != h {
		return fmt.Errorf("parameter %s has shape %s, not per unit", name, plain.Shape(dims))
	}
	nt, err := sliceTensor(m, t, len(dims)-1, keep)
	if err != nil {
		return err
	}
	if src == name && e.exclusive(name) {
		if attr != nil {
			attr.T = nt
			return nil
		}
		e.replaceInit(name, nt)
		e.setDeclaredShape(name, nt.GetDims())
		return nil
	}
	nt.Name = proto.String(e.unique(src + "_ecprune_units"))
	e.addInit(nt)
	n := e.g.Node[ni]
	for k, in := range n.Input {
		if in == name {
			n.Input[k] = nt.GetName()
		}
	}
	e.redirected[name] = true
	return nil
}

// setDeclaredLastDim changes a declared last dimension h of value name to
// kept (graph inputs, outputs and value_info), leaving unknown or
// symbolic dimensions as they are.
func (e *editor) setDeclaredLastDim(name string, h, kept int64) {
	for _, vs := range [][]*pb.ValueInfoProto{e.g.Input, e.g.Output, e.g.ValueInfo} {
		for _, v := range vs {
			tt := v.GetType().GetTensorType()
			if v.GetName() != name || tt == nil || tt.Shape == nil || len(tt.Shape.Dim) == 0 {
				continue
			}
			d := tt.Shape.Dim[len(tt.Shape.Dim)-1]
			if dv, ok := d.Value.(*pb.TensorShapeProto_Dimension_DimValue); ok && dv.DimValue == h {
				d.Value = &pb.TensorShapeProto_Dimension_DimValue{DimValue: kept}
			}
		}
	}
}

// applyUnitEdit slices one layer's weight and writes its bias.
func (e *editor) applyUnitEdit(m *onnxio.Model, ed *unitEdit) error {
	l := ed.l
	if !l.Prunable {
		return fmt.Errorf("not rewritable: %s", l.Reason)
	}
	n := e.g.Node[l.MainIdx]
	if op := n.GetOpType(); (op != "Gemm" && op != "MatMul") || len(n.Input) < 2 {
		return fmt.Errorf("node %s is a %s, not a Gemm or MatMul: the layer is not from this model", l.Node, op)
	}
	init, err := e.weightSource(l)
	if err != nil {
		return err
	}
	if d := init.GetDims(); len(d) != 2 {
		return fmt.Errorf("weight %s has shape %s", init.GetName(), plain.Shape(d))
	}
	// Stored [out, in] or [in, out]: rows are the out axis.
	outAxis, inAxis := 0, 1
	if l.WeightLayout == onnxio.LayoutInOut {
		outAxis, inAxis = 1, 0
	}
	t := init
	if ed.w != nil {
		// New values: stored through the element type and alpha, in the
		// stored layout, then sliced like the others.
		vals := make([]float64, l.Out*l.In)
		for o := 0; o < l.Out; o++ {
			for j := 0; j < l.In; j++ {
				k := o*l.In + j
				if l.WeightLayout == onnxio.LayoutInOut {
					k = j*l.Out + o
				}
				vals[k] = stored(l.WeightType, ed.w[o*l.In+j], l.Alpha)
			}
		}
		t = onnxio.EncodeFloats(init, init.GetDims(), vals)
	}
	if ed.rows != nil {
		if t, err = sliceTensor(m, t, outAxis, ed.rows); err != nil {
			return err
		}
	}
	if ed.cols != nil {
		if t, err = sliceTensor(m, t, inAxis, ed.cols); err != nil {
			return err
		}
	}
	e.replaceInit(init.GetName(), t)
	e.setDeclaredShape(init.GetName(), t.GetDims())
	// The bias: the compensated one if any, else the old one, sliced to
	// the kept rows.
	b := ed.b
	if b == nil && (l.B == nil || ed.rows == nil) {
		return nil
	}
	if b == nil {
		b = l.B
	}
	rows := ed.rows
	if rows == nil {
		rows = make([]int, l.Out)
		for i := range rows {
			rows[i] = i
		}
	}
	kb := make([]float64, len(rows))
	for k, i := range rows {
		kb[k] = b[i]
	}
	// writeBias and insertBias size the bias by Out: give them the layer
	// as it is after the cut.
	small := *l
	small.Out = len(rows)
	if l.B != nil {
		small.B = kb
		if onnxio.NumElements(l.BiasShape) == int64(l.Out) && len(l.BiasShape) > 0 {
			small.BiasShape = slices.Clone(l.BiasShape)
			small.BiasShape[len(small.BiasShape)-1] = int64(len(rows))
		}
	}
	return e.writeBias(&small, n, kb)
}

// sliceTensor keeps the given indices of one axis of a tensor. Raw bytes
// are copied element by element, so kept values are bit-identical; typed
// fields and external data are decoded and encoded again (exact for every
// float type).
func sliceTensor(m *onnxio.Model, t *pb.TensorProto, axis int, keep []int) (*pb.TensorProto, error) {
	dims := t.GetDims()
	if axis < 0 || axis >= len(dims) {
		return nil, fmt.Errorf("tensor %s: axis %d of shape %s", t.GetName(), axis, plain.Shape(dims))
	}
	outer, inner := int64(1), int64(1)
	for _, d := range dims[:axis] {
		outer *= d
	}
	for _, d := range dims[axis+1:] {
		inner *= d
	}
	size := dims[axis]
	nd := slices.Clone(dims)
	nd[axis] = int64(len(keep))
	es := int64(onnxio.ElemSize(t.GetDataType()))
	if t.RawData != nil && t.GetDataLocation() != pb.TensorProto_EXTERNAL && es > 0 {
		raw := t.RawData
		if int64(len(raw)) != outer*size*inner*es {
			return nil, fmt.Errorf("tensor %s: %d raw bytes for shape %s", t.GetName(), len(raw), plain.Shape(dims))
		}
		nr := make([]byte, 0, outer*int64(len(keep))*inner*es)
		for o := int64(0); o < outer; o++ {
			for _, k := range keep {
				off := ((o*size + int64(k)) * inner) * es
				nr = append(nr, raw[off:off+inner*es]...)
			}
		}
		nt := proto.Clone(t).(*pb.TensorProto)
		nt.Dims, nt.RawData = nd, nr
		return nt, nil
	}
	vals, err := m.Floats(t)
	if err != nil {
		return nil, err
	}
	if int64(len(vals)) != outer*size*inner {
		return nil, fmt.Errorf("tensor %s: %d values for shape %s", t.GetName(), len(vals), plain.Shape(dims))
	}
	nv := make([]float64, 0, outer*int64(len(keep))*inner)
	for o := int64(0); o < outer; o++ {
		for _, k := range keep {
			off := (o*size + int64(k)) * inner
			nv = append(nv, vals[off:off+inner]...)
		}
	}
	return onnxio.EncodeFloats(t, nd, nv), nil
}
