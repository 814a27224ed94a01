package onnxio

import (
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Every ONNX node that is not a dense layer or one of the ops the analysis
// treats specially (activations, elementwise arithmetic with constants,
// reshapes) becomes an OpNode: its attributes decoded, its constant inputs
// placed in values of their own (Network.Consts), its element types
// recorded. Whether the analysis can evaluate it is decided by package
// analysis's op registry, which names every op it cannot run at once; the
// extractor itself refuses only what no evaluator could run (custom
// domains, quantized ops, missing producers).

// generic translates node i into one OpNode per output that has a name.
func (x *extractor) generic(i int, n *pb.NodeProto) error {
	label := nodeLabel(i, n)
	o := Op{Kind: OpNode, Type: n.GetOpType(), Node: label, Opset: x.opset, Attrs: x.decodeAttrs(n), Outputs: len(n.Output)}
	o.Slots = make([]int, len(n.Input))
	o.InTypes = make([]int32, len(n.Input))
	for k, name := range n.Input {
		o.Slots[k] = -1
		if name == "" {
			continue
		}
		if cause, bad := x.unavail[name]; bad {
			x.markUnavailable(n, cause)
			return nil
		}
		id, err := x.inputValue(name, label)
		if err != nil {
			return err
		}
		o.Slots[k] = len(o.In)
		o.In = append(o.In, id)
		o.InTypes[k] = x.vtype[name]
	}
	for k, out := range n.Output {
		if out == "" {
			continue
		}
		op := o
		op.OutIndex = k
		op.OutType = outType(n, k, o.InTypes)
		x.vtype[out] = op.OutType
		x.addOp(op, out)
	}
	return nil
}

// inputValue is the value id of a node input: a computed value, or a
// constant placed in a value of its own on first use.
func (x *extractor) inputValue(name, label string) (int, error) {
	if id, ok := x.vid[name]; ok {
		return id, nil
	}
	c := x.consts[name]
	if c == nil {
		return 0, badInput(x.m.Path, "node %s reads %q, which no node, initializer or graph input provides", label, name)
	}
	v, err := x.floatsOf(c)
	if err != nil {
		return 0, err
	}
	id := x.value(name)
	x.net.Consts = append(x.net.Consts, ConstValue{Value: id, Type: c.dtype,
		Const: &Const{Name: name, Shape: append([]int{}, c.shape...), Data: v}})
	x.vtype[name] = c.dtype
	return id, nil
}

// decodeAttrs decodes a node's attributes; tensor attributes are decoded
// to float64 values (ConstantOfShape's value, a Constant-like payload).
func (x *extractor) decodeAttrs(n *pb.NodeProto) map[string]AttrValue {
	if len(n.Attribute) == 0 {
		return nil
	}
	m := make(map[string]AttrValue, len(n.Attribute))
	for _, a := range n.Attribute {
		var v AttrValue
		switch a.GetType() {
		case pb.AttributeProto_INT:
			v = AttrValue{Kind: AttrIsInt, Int: a.GetI()}
		case pb.AttributeProto_FLOAT:
			v = AttrValue{Kind: AttrIsFloat, Float: float64(a.GetF())}
		case pb.AttributeProto_STRING:
			v = AttrValue{Kind: AttrIsString, Str: string(a.GetS())}
		case pb.AttributeProto_INTS:
			v = AttrValue{Kind: AttrIsInts, Ints: append([]int64{}, a.Ints...)}
		case pb.AttributeProto_FLOATS:
			v = AttrValue{Kind: AttrIsFloats, Floats: make([]float64, len(a.Floats))}
			for k, f := range a.Floats {
				v.Floats[k] = float64(f)
			}
		case pb.AttributeProto_STRINGS:
			v = AttrValue{Kind: AttrIsStrings}
			for _, s := range a.Strings {
				v.Strs = append(v.Strs, string(s))
			}
		case pb.AttributeProto_TENSOR:
			t := a.GetT()
			c := &constVal{tensor: t, shape: dimsInt(t.GetDims()), dtype: t.GetDataType(), transposeIdx: -1}
			if vals, err := x.floatsOf(c); err == nil && t.GetDataLocation() != pb.TensorProto_EXTERNAL {
				v = AttrValue{Kind: AttrIsTensor, Tensor: &Const{Name: a.GetName(), Shape: c.shape, Data: vals}, TensorT: c.dtype}
			}
		}
		m[a.GetName()] = v
	}
	return m
}

// outType is the element type of output k of a node, given its inputs'
// types (0 where unknown or absent): ONNX's type rules for the ops whose
// output type differs from their first typed input's.
func outType(n *pb.NodeProto, k int, in []int32) int32 {
	first := func(from int) int32 {
		for j := from; j < len(in); j++ {
			if in[j] != 0 {
				return in[j]
			}
		}
		return 0
	}
	switch n.GetOpType() {
	case "Shape", "Size", "ArgMax", "ArgMin", "NonZero":
		return Int64
	case "Cast":
		return int32(AttrInt(n, "to", 0))
	case "CastLike":
		if len(in) > 1 {
			return in[1]
		}
	case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf":
		return Bool
	case "ConstantOfShape":
		for _, a := range n.Attribute {
			if a.GetName() == "value" && a.GetT() != nil {
				return a.GetT().GetDataType()
			}
		}
		return Float
	case "Where":
		return first(1)
	case "TopK", "MaxPool":
		if k == 1 {
			return Int64 // indices
		}
	case "EyeLike", "RandomNormalLike", "RandomUniformLike":
		if d := AttrInt(n, "dtype", 0); d != 0 {
			return int32(d)
		}
	}
	return first(0)
}

// pruneDead drops the OpNode ops no graph output depends on (the shape
// subgraphs whose result the extractor folded into a constant Reshape,
// Dropout masks) and the constants only they read, so that evaluation
// does exactly the work the outputs need.
func (x *extractor) pruneDead() {
	live := make([]bool, len(x.net.Values))
	for _, id := range x.net.Outputs {
		live[id] = true
	}
	keep := make([]bool, len(x.net.Ops))
	for i := len(x.net.Ops) - 1; i >= 0; i-- {
		op := &x.net.Ops[i]
		if op.Kind != OpNode || live[op.Out] {
			keep[i] = true
			for _, id := range op.In {
				live[id] = true
			}
		}
	}
	ops := x.net.Ops[:0]
	for i, op := range x.net.Ops {
		if keep[i] {
			ops = append(ops, op)
		}
	}
	x.net.Ops = ops
	consts := x.net.Consts[:0]
	for _, c := range x.net.Consts {
		if live[c.Value] {
			consts = append(consts, c)
		}
	}
	x.net.Consts = consts
}

// valueTypes lists the element types of the network's values by id.
func (x *extractor) valueTypes() []int32 {
	t := make([]int32, len(x.net.Values))
	for id, v := range x.net.Values {
		t[id] = x.vtype[v.Name]
	}
	return t
}
