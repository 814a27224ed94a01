package onnxio

import (
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
// a constant, or dimension axis of the value named of.
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
		axes := AttrInts(n, "axes")
		if len(n.Input) > 1 {
			axes, _ = ints(n.Input[1])
		}
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
