package onnxio

import (
	"slices"
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
