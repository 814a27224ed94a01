package onnxio

import (
	"slices"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// PyTorch exports x.view(x.size(0), -1) (and x.reshape(x.shape[0], -1)) as
// a small subgraph that computes the target shape at run time:
//
//	Shape(x) -> Gather(index 0) -> Unsqueeze(axis 0) -> Concat(with [-1]) -> Reshape(x, .)
//
// The only run-time quantity in it is x's batch size, which Reshape can
// copy by itself (a 0 in its shape, with allowzero = 0, copies that
// dimension of its input). The extractor evaluates such subgraphs on
// symbolic dimensions and gives the Reshape the equivalent constant
// shape; the subgraph stays in the file, untouched.

// symDim is one element of a shape vector computed from a graph value:
// a constant, or dimension axis of the value named of (a negative axis
// counts from the last, as Slice(Shape(x), -1) gives it).
type symDim struct {
	of   string // "" for a constant
	axis int
	c    int64
}

// symVal is an integer value known symbolically: the whole shape of a
// value (shapeOf, from a Shape node, axes from start on) or a list of
// elements (a scalar when scalar is set).
type symVal struct {
	shapeOf string
	start   int
	dims    []symDim
	scalar  bool
}

// shapeNode handles a node of a shape subgraph (its inputs are shapes or
// integer constants). It reports whether it took the node.
func (x *extractor) shapeNode(i int, n *pb.NodeProto) (bool, error) {
	took, err := x.symNode(i, n)
	if !took || err != nil {
		return took, err
	}
	// The value exists at run time too, for readers the fold does not
	// cover (Expand, ConstantOfShape, ...); pruneDead drops it when only
	// folded Reshapes read it.
	return true, x.generic(i, n)
}

// symNode tracks a node of a shape subgraph symbolically when it can.
func (x *extractor) symNode(i int, n *pb.NodeProto) (bool, error) {
	op := n.GetOpType()
	out := firstOutput(n)
	sym := func(name string) *symVal { return x.sym[name] }
	ints := func(name string) ([]int64, bool) {
		c := x.consts[name]
		if c == nil || IsFloatType(c.dtype) {
			return nil, false
		}
		v, err := x.intsOf(c)
		return v, err == nil
	}
	// axes of a Squeeze or Unsqueeze: an attribute before opset 13, an
	// input from then on (nil when that input is not a constant).
	axesOf := func() []int64 {
		if len(n.Input) > 1 {
			a, _ := ints(n.Input[1])
			return a
		}
		return AttrInts(n, "axes")
	}
	switch op {
	case "Shape":
		if len(n.Input) != 1 || x.consts[n.Input[0]] != nil {
			return false, nil
		}
		if _, ok := x.vid[n.Input[0]]; !ok {
			return false, nil
		}
		start := int(AttrInt(n, "start", 0))
		if start < 0 || AttrInt(n, "end", -1<<62) != -1<<62 {
			return true, nil // not symbolic: evaluated at run time
		}
		x.sym[out] = &symVal{shapeOf: n.Input[0], start: start}
		return true, nil
	case "Gather":
		s := sym(n.Input[0])
		if s == nil || len(n.Input) != 2 {
			return false, nil
		}
		idx, ok := ints(n.Input[1])
		c := x.consts[n.Input[1]]
		if !ok || s.shapeOf == "" || AttrInt(n, "axis", 0) != 0 || len(idx) != 1 || idx[0] < 0 {
			return true, nil // not symbolic: evaluated at run time
		}
		d := symDim{of: s.shapeOf, axis: s.start + int(idx[0])}
		x.sym[out] = &symVal{dims: []symDim{d}, scalar: len(c.shape) == 0}
		return true, nil
	case "Unsqueeze":
		s := sym(n.Input[0])
		if s == nil {
			return false, nil
		}
		axes := axesOf()
		if !s.scalar || len(axes) != 1 || axes[0] != 0 {
			return true, nil // not symbolic: evaluated at run time
		}
		x.sym[out] = &symVal{dims: s.dims}
		return true, nil
	case "Concat":
		found := false
		for _, in := range n.Input {
			found = found || sym(in) != nil
		}
		if !found {
			return false, nil
		}
		var dims []symDim
		for _, in := range n.Input {
			if s := sym(in); s != nil && s.shapeOf == "" && !s.scalar {
				dims = append(dims, s.dims...)
				continue
			}
			if v, ok := ints(in); ok && len(x.consts[in].shape) == 1 {
				for _, c := range v {
					dims = append(dims, symDim{c: c})
				}
				continue
			}
			return true, nil // not symbolic: evaluated at run time
		}
		if AttrInt(n, "axis", 0) != 0 {
			return true, nil // not symbolic: evaluated at run time
		}
		x.sym[out] = &symVal{dims: dims}
		return true, nil
	case "Slice":
		s := sym(n.Input[0])
		if s == nil {
			return false, nil
		}
		if d, ok := x.symSlice(n, s); ok {
			x.sym[out] = &symVal{dims: d}
		}
		return true, nil
	case "Squeeze":
		s := sym(n.Input[0])
		if s == nil {
			return false, nil
		}
		axes := axesOf()
		if s.shapeOf == "" && !s.scalar && len(s.dims) == 1 && (axes == nil || (len(axes) == 1 && (axes[0] == 0 || axes[0] == -1))) {
			x.sym[out] = &symVal{dims: s.dims, scalar: true}
		}
		return true, nil
	case "Add", "Sub", "Mul", "Div":
		if len(n.Input) != 2 || (sym(n.Input[0]) == nil && sym(n.Input[1]) == nil) {
			return false, nil
		}
		if v, ok := x.symArith(op, n.Input[0], n.Input[1]); ok {
			x.sym[out] = v
		}
		return true, nil
	case "Cast":
		s := sym(n.Input[0])
		if s == nil {
			return false, nil
		}
		to := int32(AttrInt(n, "to", 0))
		if to != Int64 && to != Int32 {
			return true, nil // not symbolic: evaluated at run time
		}
		x.sym[out] = s
		return true, nil
	}
	return false, nil
}

// symReshape turns a Reshape's computed target shape into the constant
// one it equals: constants stay, and dimension k of the Reshape's own
// input at position k becomes 0 (copy). Anything else is not known
// before run time.
func (x *extractor) symReshape(n *pb.NodeProto) ([]int64, bool) {
	s := x.sym[n.Input[1]]
	if s == nil || s.shapeOf != "" || s.scalar || AttrInt(n, "allowzero", 0) != 0 {
		return nil, false
	}
	shape := make([]int64, len(s.dims))
	for p, d := range s.dims {
		switch {
		case d.of == "":
			if d.c == 0 {
				return nil, false // a literal 0 would be read as "copy"
			}
			shape[p] = d.c
		case d.of == n.Input[0] && d.axis == p:
			shape[p] = 0
		default:
			return nil, false
		}
	}
	return shape, true
}

// The exporter writes what depends only on a tensor's size, such as
// MultiheadAttention's split of its packed projection
// (w[:E], w[E:] with E = q.size(-1)), as shape arithmetic over Shape(q).
// Where the graph fixes the dimension (a declared input shape, or the
// weight q meets in a product, which a valid run must match), the
// arithmetic folds to a constant: staticInts resolves it.

// maxSliceEnd is what exporters write for "to the end" (INT64_MAX).
const maxSliceEnd = int64(1<<63 - 1)

// sliceArgs reads an opset-10+ Slice's starts, ends, axes and steps when
// each is one value the graph fixes (axes default to 0, steps to 1).
func (x *extractor) sliceArgs(n *pb.NodeProto) (start, end, axis, step int64, ok bool) {
	arg := func(k int, def int64) (int64, bool) {
		if len(n.Input) <= k || n.Input[k] == "" {
			return def, true
		}
		v, ok := x.staticInts(n.Input[k])
		if !ok || len(v) != 1 {
			return 0, false
		}
		return v[0], true
	}
	start, ok1 := arg(1, 0)
	end, ok2 := arg(2, 0)
	axis, ok3 := arg(3, 0)
	step, ok4 := arg(4, 1)
	return start, end, axis, step, ok1 && ok2 && ok3 && ok4
}

// symSlice is a Slice (constant bounds, step 1, axis 0) of a symbolic
// shape vector: a whole shape's trailing dims by negative starts, or part
// of a list of elements.
func (x *extractor) symSlice(n *pb.NodeProto, s *symVal) ([]symDim, bool) {
	if len(n.Input) < 3 || s.scalar {
		return nil, false
	}
	start, end, axis, step, ok := x.sliceArgs(n)
	if !ok || axis != 0 || step != 1 {
		return nil, false
	}
	if s.shapeOf != "" {
		// The rank is not known: only trailing dims, counted from the end.
		if start >= 0 || start < -64 || s.start != 0 || (end != maxSliceEnd && end > 0) {
			return nil, false
		}
		stop := int64(0)
		if end < 0 {
			stop = end
		}
		var dims []symDim
		for a := start; a < stop; a++ {
			dims = append(dims, symDim{of: s.shapeOf, axis: int(a)})
		}
		return dims, len(dims) > 0
	}
	size := int64(len(s.dims))
	clamp := func(v int64) int64 {
		if v < 0 {
			v += size
		}
		return max(0, min(v, size))
	}
	a, b := clamp(start), clamp(end)
	if a >= b {
		return nil, false
	}
	return append([]symDim(nil), s.dims[a:b]...), true
}

// symArith folds integer Add, Sub, Mul or Div of one-element operands
// whose values are static.
func (x *extractor) symArith(op, a, b string) (*symVal, bool) {
	va, oka := x.staticInts(a)
	vb, okb := x.staticInts(b)
	if !oka || !okb || len(va) != 1 || len(vb) != 1 {
		return nil, false
	}
	var r int64
	switch op {
	case "Add":
		r = va[0] + vb[0]
	case "Sub":
		r = va[0] - vb[0]
	case "Mul":
		r = va[0] * vb[0]
	case "Div":
		if vb[0] == 0 {
			return nil, false
		}
		r = va[0] / vb[0] // ONNX integer division truncates, as Go's
	}
	scalar := x.isScalar(a) && x.isScalar(b)
	return &symVal{dims: []symDim{{c: r}}, scalar: scalar}, true
}

// isScalar: a rank-0 integer value (a constant or a symbolic scalar).
func (x *extractor) isScalar(name string) bool {
	if c := x.consts[name]; c != nil {
		return len(c.shape) == 0
	}
	s := x.sym[name]
	return s != nil && s.scalar
}

// staticInts is the value of an integer constant or of a symbolic list
// whose every element the graph fixes.
func (x *extractor) staticInts(name string) ([]int64, bool) {
	if c := x.consts[name]; c != nil {
		if IsFloatType(c.dtype) {
			return nil, false
		}
		v, err := x.intsOf(c)
		return v, err == nil
	}
	s := x.sym[name]
	if s == nil || s.shapeOf != "" {
		return nil, false
	}
	out := make([]int64, len(s.dims))
	for k, d := range s.dims {
		if d.of == "" {
			out[k] = d.c
			continue
		}
		v, ok := x.staticDim(d.of, d.axis)
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

// staticDim is dimension axis of value v when the graph fixes it: declared
// (a graph input or value_info with that dimension), or the last one of
// the left operand of a MatMul whose right operand's rows are known (a
// run in which they differ fails).
func (x *extractor) staticDim(v string, axis int) (int64, bool) {
	for _, vis := range [][]*pb.ValueInfoProto{x.g.G.Input, x.g.G.ValueInfo, x.g.G.Output} {
		for _, vi := range vis {
			if vi.GetName() != v {
				continue
			}
			s := ValueShape(vi)
			a := axis
			if a < 0 {
				a += len(s)
			}
			if s != nil && a >= 0 && a < len(s) && s[a] > 0 {
				return s[a], true
			}
		}
	}
	if axis != -1 {
		return 0, false
	}
	for _, u := range x.g.Consumers[v] {
		n := x.g.G.Node[u]
		if n.GetOpType() != "MatMul" || len(n.Input) != 2 || n.Input[0] != v || n.Input[1] == v {
			continue
		}
		if r, ok := x.staticRows(n.Input[1], 0); ok {
			return r, true
		}
	}
	return 0, false
}

// staticRows is the number of rows (dim -2) of a matrix value that is a
// constant, or a 2-D Transpose of a constant or of a Slice along axis 0
// of one (its columns are the constant's).
func (x *extractor) staticRows(v string, depth int) (int64, bool) {
	if c := x.consts[v]; c != nil {
		if len(c.shape) == 2 {
			return int64(c.shape[0]), true
		}
		return 0, false
	}
	p, ok := x.g.Producer[v]
	if !ok || depth > 4 {
		return 0, false
	}
	n := x.g.G.Node[p]
	if len(n.Input) == 0 {
		return 0, false
	}
	switch n.GetOpType() {
	case "Identity":
		return x.staticRows(n.Input[0], depth+1)
	case "Transpose":
		if perm := AttrInts(n, "perm"); perm != nil && !slices.Equal(perm, []int64{1, 0}) {
			return 0, false
		}
		src := n.Input[0]
		for steps := 0; steps < 8; steps++ {
			// The columns survive a Slice along axis 0.
			q, ok := x.g.Producer[src]
			if !ok {
				break
			}
			sn := x.g.G.Node[q]
			if sn.GetOpType() != "Slice" || len(sn.Input) < 4 || sn.Input[3] == "" {
				return 0, false
			}
			if a, ok := x.graphInts(sn.Input[3]); !ok || len(a) != 1 || a[0] != 0 {
				return 0, false
			}
			src = sn.Input[0]
		}
		if c := x.g.Initializer[src]; c != nil && len(c.GetDims()) == 2 {
			return c.GetDims()[1], true
		}
	}
	return 0, false
}

// graphInts reads an integer initializer or Constant node's value, whether
// or not extraction has reached it.
func (x *extractor) graphInts(name string) ([]int64, bool) {
	var t *pb.TensorProto
	if init := x.g.Initializer[name]; init != nil {
		t = init
	} else if p, ok := x.g.Producer[name]; ok && x.g.G.Node[p].GetOpType() == "Constant" {
		if a := Attr(x.g.G.Node[p], "value"); a != nil {
			t = a.GetT()
		}
	}
	if t == nil || IsFloatType(t.GetDataType()) {
		return nil, false
	}
	v, err := x.m.Ints(t)
	return v, err == nil
}
