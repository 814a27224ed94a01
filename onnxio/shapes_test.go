package onnxio

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// shapeModel is x [N,4,4] -> Reshape(x, target) -> MatMul(16x3) -> y, the
// target computed by the nodes nodes(x) returns (the last one's output is
// the target), at opset 13.
func shapeModel(t *testing.T, nodes func() []*pb.NodeProto) *Model {
	t.Helper()
	f := pb.TensorProto_FLOAT
	dim := func(v int64) *pb.TensorShapeProto_Dimension {
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	vi := func(name string, dims ...*pb.TensorShapeProto_Dimension) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(f)), Shape: &pb.TensorShapeProto{Dim: dims}}}}}
	}
	batch := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}
	ns := nodes()
	target := ns[len(ns)-1].Output[0]
	ns = append(ns,
		&pb.NodeProto{Name: proto.String("reshape"), OpType: proto.String("Reshape"), Input: []string{"x", target}, Output: []string{"flat"}},
		&pb.NodeProto{Name: proto.String("matmul"), OpType: proto.String("MatMul"), Input: []string{"flat", "w"}, Output: []string{"y"}})
	w := &pb.TensorProto{Name: proto.String("w"), Dims: []int64{16, 3}, DataType: proto.Int32(int32(f)), FloatData: make([]float32, 48)}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &pb.GraphProto{Name: proto.String("g"), Node: ns, Initializer: []*pb.TensorProto{w},
			Input: []*pb.ValueInfoProto{vi("x", batch, dim(4), dim(4))}, Output: []*pb.ValueInfoProto{vi("y", batch, dim(3))}}}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b, "shape.onnx")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func intConst(name string, scalar bool, v ...int64) *pb.NodeProto {
	t := &pb.TensorProto{DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: v}
	if !scalar {
		t.Dims = []int64{int64(len(v))}
	}
	return &pb.NodeProto{Name: proto.String(name), OpType: proto.String("Constant"), Output: []string{name},
		Attribute: []*pb.AttributeProto{{Name: proto.String("value"), Type: pb.AttributeProto_TENSOR.Enum(), T: t}}}
}

func node(op string, in []string, out string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	return &pb.NodeProto{Name: proto.String(out + "_node"), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs}
}

func intAttr(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// TestShapeSubgraphs: the view(x.size(0), -1) pattern and its variants
// become a constant Reshape; shapes that depend on more than x's own batch
// size are left to the evaluator (OpNode ops computing the shape with the
// data), never guessed.
func TestShapeSubgraphs(t *testing.T) {
	view := func(gatherIdx int64, of string, tail ...int64) func() []*pb.NodeProto {
		return func() []*pb.NodeProto {
			return []*pb.NodeProto{
				node("Shape", []string{of}, "s"),
				intConst("i", true, gatherIdx),
				node("Gather", []string{"s", "i"}, "d", intAttr("axis", 0)),
				intConst("ax", false, 0),
				node("Unsqueeze", []string{"d", "ax"}, "du"),
				intConst("rest", false, tail...),
				node("Concat", []string{"du", "rest"}, "target", intAttr("axis", 0)),
			}
		}
	}
	cases := []struct {
		name  string
		nodes func() []*pb.NodeProto
		shape []int64 // the Reshape's constant shape, or nil: computed at run time
		why   string  // then the OpNode that computes it
	}{
		{"view batch, -1", view(0, "x", -1), []int64{0, -1}, ""},
		{"view batch, 16", view(0, "x", 16), []int64{0, 16}, ""},
		{"cast to int64 on the way", func() []*pb.NodeProto {
			ns := view(0, "x", -1)()
			ns[len(ns)-1].Output[0] = "t0"
			return append(ns, node("Cast", []string{"t0"}, "target", intAttr("to", int64(Int64))))
		}, []int64{0, -1}, ""},
		{"a dimension other than the batch", view(1, "x", -1), nil, "Concat"},
		{"a literal 0 next to it", view(0, "x", 0), nil, "Concat"},
		{"shape arithmetic", func() []*pb.NodeProto {
			return []*pb.NodeProto{node("Shape", []string{"x"}, "s"), intConst("two", false, 2), node("Mul", []string{"s", "two"}, "target")}
		}, nil, "Mul"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net, err := Extract(shapeModel(t, c.nodes), ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var reshape *Op
			for i := range net.Ops {
				if net.Ops[i].Kind == OpReshape {
					reshape = &net.Ops[i]
				}
			}
			if c.shape == nil {
				found := false
				for _, op := range net.Ops {
					found = found || op.Kind == OpNode && op.Type == c.why && op.OutType == Int64
				}
				if !net.Evaluable || reshape != nil || !found {
					t.Fatalf("evaluable %v (%s), constant reshape %v, int64 %s op %v; want the shape computed at run time", net.Evaluable, net.Reason, reshape != nil, c.why, found)
				}
				return
			}
			if !net.Evaluable || reshape == nil {
				t.Fatalf("not extracted: %s", net.Reason)
			}
			if !slices.Equal(reshape.Shape, c.shape) || reshape.AllowZero {
				t.Errorf("Reshape shape %v (allowzero %v), want %v", reshape.Shape, reshape.AllowZero, c.shape)
			}
			if len(net.Layers) != 1 || net.Layers[0].In != 16 {
				t.Errorf("layers %d, want the 16x3 MatMul", len(net.Layers))
			}
		})
	}
}

// blockModel is MultiheadAttention's cross-attention split as torch 1.13
// exports it: E = x.size(-1) by shape arithmetic, then W[:E] and
// W[E:kvEnd(E)] (Slice along axis 0 of the packed [12, 4] weight),
// each transposed into a MatMul with x, whose last dimension is lastDim
// (a dim_param when 0); eStart and eEnd bound the Slice of Shape(x) E is
// read from.
func blockModel(t *testing.T, lastDim int64, eStart, eEnd int64, kvMul int64) *Model {
	t.Helper()
	f := pb.TensorProto_FLOAT
	dim := func(v int64) *pb.TensorShapeProto_Dimension {
		if v == 0 {
			return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "E"}}
		}
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	vi := func(name string, dims ...*pb.TensorShapeProto_Dimension) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(f)), Shape: &pb.TensorShapeProto{Dim: dims}}}}}
	}
	batch := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}
	ns := []*pb.NodeProto{
		node("Shape", []string{"x"}, "s"),
		intConst("st", false, eStart), intConst("en", false, eEnd), intConst("ax0", false, 0),
		node("Slice", []string{"s", "st", "en", "ax0"}, "sl"),
		node("Squeeze", []string{"sl", "ax0"}, "e"),
		node("Unsqueeze", []string{"e", "ax0"}, "eu"),
		intConst("zero", false, 0),
		node("Add", []string{"zero", "eu"}, "qend"),
		intConst("mul", true, kvMul),
		node("Mul", []string{"e", "mul"}, "e2"),
		node("Unsqueeze", []string{"e2", "ax0"}, "e2u"),
		node("Add", []string{"qend", "e2u"}, "kvend"),
		node("Slice", []string{"w", "zero", "qend", "ax0"}, "wq"),
		node("Slice", []string{"w", "qend", "kvend", "ax0"}, "wkv"),
		node("Transpose", []string{"wq"}, "wqT"),
		node("Transpose", []string{"wkv"}, "wkvT"),
		node("MatMul", []string{"x", "wqT"}, "yq"),
		node("MatMul", []string{"x", "wkvT"}, "ykv"),
	}
	w := &pb.TensorProto{Name: proto.String("w"), Dims: []int64{12, 4}, DataType: proto.Int32(int32(f)), FloatData: make([]float32, 48)}
	for k := range w.FloatData {
		w.FloatData[k] = float32(k)
	}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &pb.GraphProto{Name: proto.String("g"), Node: ns, Initializer: []*pb.TensorProto{w},
			Input:  []*pb.ValueInfoProto{vi("x", batch, dim(3), dim(lastDim))},
			Output: []*pb.ValueInfoProto{{Name: proto.String("yq")}, {Name: proto.String("ykv")}}}}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b, "block.onnx")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStaticSliceBlocks: Slice bounds computed from Shape(x) fold to
// constants when the graph fixes the dimension (declared, or the rows of
// the weight x meets in a MatMul), and each MatMul reading a block of the
// packed weight is a dense layer on that block, the two tied as one
// stored tensor. Bounds the graph does not fix leave the product a
// product of activations.
func TestStaticSliceBlocks(t *testing.T) {
	const intMax = int64(1<<63 - 1)
	cases := []struct {
		name          string
		lastDim       int64 // 0: a dim_param
		start, end    int64 // the Slice of Shape(x) E is read from
		kvMul         int64
		blocks        [][2]int // rows of each layer's block; nil: no layer
		prunable      bool
		reasonContain string
	}{
		{"declared last dim", 4, -1, intMax, 2, [][2]int{{0, 4}, {4, 12}}, true, ""},
		{"last dim from the MatMul's weight", 0, -1, intMax, 2, [][2]int{{0, 4}, {4, 12}}, true, ""},
		{"rows no layer reads", 4, -1, intMax, 1, [][2]int{{0, 4}, {4, 8}}, false, "row 8 of weight w is read by no dense layer"},
		{"a dimension the graph does not fix", 0, 1, 2, 2, nil, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net, err := Extract(blockModel(t, c.lastDim, c.start, c.end, c.kvMul), ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !net.Evaluable {
				t.Fatalf("not evaluable: %s", net.Reason)
			}
			if c.blocks == nil {
				if len(net.Layers) != 0 {
					t.Fatalf("%d layers, want none (a computed weight)", len(net.Layers))
				}
				return
			}
			if len(net.Layers) != len(c.blocks) || len(net.Ties) != 1 || len(net.Ties[0].Layers) != len(c.blocks) {
				t.Fatalf("%d layers, %d ties; want %d layers tied as one tensor", len(net.Layers), len(net.Ties), len(c.blocks))
			}
			for k, l := range net.Layers {
				b := c.blocks[k]
				if l.WeightInit != "w" || l.WeightRows != 12 || l.WeightRow0 != b[0] || l.Out != b[1]-b[0] || l.In != 4 || l.SliceIdx < 0 {
					t.Errorf("layer %d: %s rows %d+%d of %d, %dx%d; want rows %v of w's 12, %dx4", k, l.WeightInit, l.WeightRow0, l.BlockRows(), l.WeightRows, l.Out, l.In, b, b[1]-b[0])
				}
				// W is the block's rows: w's element k is k.
				for q := 0; q < l.Params(); q++ {
					if s := l.StoredIndex(q); l.At(q) != float64(s) || s < b[0]*4 || s >= b[1]*4 {
						t.Fatalf("layer %d: W[%d] = %g stored at %d, want the element at %d", k, q, l.At(q), s, b[0]*4+q)
					}
				}
				if l.Prunable != c.prunable || !strings.Contains(l.Reason, c.reasonContain) {
					t.Errorf("layer %d: prunable %v (%s), want %v (%s)", k, l.Prunable, l.Reason, c.prunable, c.reasonContain)
				}
			}
		})
	}
}

// TestFoldedIntBounds: without constant folding torch splits a packed
// [3E, E] weight into q, k and v at Shape(w)[0] / 3 * k; the integer
// arithmetic over the constant folds and the three MatMuls are layers on
// row blocks of w, tied as one tensor (Shape reads only w's dims).
func TestFoldedIntBounds(t *testing.T) {
	f := pb.TensorProto_FLOAT
	vi := func(name string, dims ...int64) *pb.ValueInfoProto {
		var ds []*pb.TensorShapeProto_Dimension
		for _, d := range dims {
			ds = append(ds, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(f)), Shape: &pb.TensorShapeProto{Dim: ds}}}}}
	}
	ns := []*pb.NodeProto{
		node("Shape", []string{"w"}, "s"),
		intConst("i0", true, 0), intConst("two", true, 2), intConst("three", true, 3), intConst("ax0", false, 0),
		node("Gather", []string{"s", "i0"}, "rows", intAttr("axis", 0)),
		node("Add", []string{"rows", "two"}, "r2"),
		node("Div", []string{"r2", "three"}, "e"),
		node("Unsqueeze", []string{"e", "ax0"}, "eu"),
		intConst("k1", false, 1), intConst("k2", false, 2), intConst("k3", false, 3),
		node("Mul", []string{"eu", "k1"}, "b1"),
		node("Mul", []string{"eu", "k2"}, "b2"),
		node("Mul", []string{"eu", "k3"}, "b3"),
		node("Slice", []string{"w", "ax0", "b1", "ax0"}, "wq"),
		node("Slice", []string{"w", "b1", "b2", "ax0"}, "wk"),
		node("Slice", []string{"w", "b2", "b3", "ax0"}, "wv"),
	}
	for _, p := range []string{"q", "k", "v"} {
		ns = append(ns, node("Transpose", []string{"w" + p}, "w"+p+"T"), node("MatMul", []string{"x", "w" + p + "T"}, "y"+p))
	}
	w := &pb.TensorProto{Name: proto.String("w"), Dims: []int64{12, 4}, DataType: proto.Int32(int32(f)), FloatData: make([]float32, 48)}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &pb.GraphProto{Name: proto.String("g"), Node: ns, Initializer: []*pb.TensorProto{w},
			Input:  []*pb.ValueInfoProto{vi("x", 2, 4)},
			Output: []*pb.ValueInfoProto{vi("yq", 2, 4), vi("yk", 2, 4), vi("yv", 2, 4)}}}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b, "fold.onnx")
	if err != nil {
		t.Fatal(err)
	}
	net, err := Extract(m, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(net.Layers) != 3 || len(net.Ties) != 1 {
		t.Fatalf("%d layers, %d ties; want 3 layers tied as one tensor", len(net.Layers), len(net.Ties))
	}
	for k, l := range net.Layers {
		if !l.Prunable || l.WeightRow0 != 4*k || l.Out != 4 || l.WeightRows != 12 {
			t.Errorf("layer %d: prunable %v (%s), rows %d+%d of %d", k, l.Prunable, l.Reason, l.WeightRow0, l.Out, l.WeightRows)
		}
	}
}
