package onnxio

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// tieModel is x [N,4] -> nodes -> outputs, with initializer W [4,4] and
// an int64 input ids [N,2] for Gathers.
func tieModel(t *testing.T, nodes []*pb.NodeProto, outputs ...string) *Network {
	t.Helper()
	vi := func(name string, elem int32, dims ...int64) *pb.ValueInfoProto {
		s := &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}}}
		for _, d := range dims {
			s.Dim = append(s.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(elem), Shape: s}}}}
	}
	w := make([]float64, 16)
	for i := range w {
		w[i] = float64(i%5) - 1.5
	}
	g := &pb.GraphProto{
		Name:        proto.String("tie"),
		Node:        nodes,
		Initializer: []*pb.TensorProto{NewFloatTensor("W", Float, []int64{4, 4}, w)},
		Input:       []*pb.ValueInfoProto{vi("x", Float, 4), vi("ids", Int64, 2)},
	}
	for _, o := range outputs {
		g.Output = append(g.Output, &pb.ValueInfoProto{Name: proto.String(o)})
	}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}}, Graph: g}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b, "tie.onnx")
	if err != nil {
		t.Fatal(err)
	}
	net, err := Extract(m, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

func tnode(name, op string, in []string, out string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	return &pb.NodeProto{Name: proto.String(name), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs}
}

func tint(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// TestTies: the readers of a shared weight become one tie, with layouts
// relative to the stored tensor; what ecprune cannot measure keeps the
// tie dense, saying why.
func TestTies(t *testing.T) {
	cases := []struct {
		name    string
		nodes   []*pb.NodeProto
		outputs []string
		layouts []Layout // of the dense uses, graph order
		gathers int
		reason  string // "" when prunable
		noTie   bool
	}{
		{
			name: "Linear applied twice",
			nodes: []*pb.NodeProto{
				tnode("g1", "Gemm", []string{"x", "W"}, "h", tint("transB", 1)),
				tnode("g2", "Gemm", []string{"h", "W"}, "y", tint("transB", 1)),
			},
			outputs: []string{"y"}, layouts: []Layout{LayoutOutIn, LayoutOutIn},
		},
		{
			name: "transposed use through Identity and Transpose",
			nodes: []*pb.NodeProto{
				tnode("id", "Identity", []string{"W"}, "Wi"),
				tnode("m1", "MatMul", []string{"x", "Wi"}, "h"),
				tnode("tr", "Transpose", []string{"W"}, "Wt"),
				tnode("m2", "MatMul", []string{"h", "Wt"}, "y"),
			},
			outputs: []string{"y"}, layouts: []Layout{LayoutInOut, LayoutOutIn},
		},
		{
			name: "embedding and output head",
			nodes: []*pb.NodeProto{
				tnode("emb", "Gather", []string{"W", "ids"}, "e", tint("axis", 0)),
				tnode("red", "ReduceMean", []string{"e"}, "h", tint("keepdims", 0)),
				tnode("head", "Gemm", []string{"x", "W"}, "y", tint("transB", 1)),
				tnode("sum", "Add", []string{"y", "h"}, "z"),
			},
			outputs: []string{"z"}, layouts: []Layout{LayoutOutIn}, gathers: 1,
		},
		{
			name: "Gather on axis 1 is not an embedding",
			nodes: []*pb.NodeProto{
				tnode("emb", "Gather", []string{"W", "ids"}, "e", tint("axis", 1)),
				tnode("head", "Gemm", []string{"x", "W"}, "y", tint("transB", 1)),
			},
			outputs: []string{"y", "e"}, layouts: []Layout{LayoutOutIn}, reason: "also read by emb (Gather)",
		},
		{
			name: "another op reads the weight",
			nodes: []*pb.NodeProto{
				tnode("g1", "Gemm", []string{"x", "W"}, "h", tint("transB", 1)),
				tnode("mul", "Mul", []string{"h", "W"}, "y"),
			},
			outputs: []string{"y"}, layouts: []Layout{LayoutOutIn}, reason: "also read by mul (Mul)",
		},
		{
			name: "the weight is a graph output",
			nodes: []*pb.NodeProto{
				tnode("g1", "Gemm", []string{"x", "W"}, "h", tint("transB", 1)),
				tnode("g2", "Gemm", []string{"h", "W"}, "y", tint("transB", 1)),
			},
			outputs: []string{"y", "W"}, reason: "graph output", noTie: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net := tieModel(t, c.nodes, c.outputs...)
			if !net.Evaluable {
				t.Fatalf("not evaluable: %s", net.Reason)
			}
			for _, l := range net.Layers {
				if c.reason == "" && !l.Prunable {
					t.Errorf("layer %s not prunable: %s", l.Node, l.Reason)
				}
				if c.reason != "" && (l.Prunable || !strings.Contains(l.Reason, c.reason)) {
					t.Errorf("layer %s: prunable %v, reason %q, want one with %q", l.Node, l.Prunable, l.Reason, c.reason)
				}
			}
			if c.noTie {
				if len(net.Ties) != 0 {
					t.Errorf("ties %v, want none", net.Ties)
				}
				return
			}
			if len(net.Ties) != 1 {
				t.Fatalf("%d ties, want 1", len(net.Ties))
			}
			tie := net.Ties[0]
			var layouts []Layout
			for _, l := range tie.Layers {
				layouts = append(layouts, l.WeightLayout)
				if l.Tie != tie {
					t.Errorf("layer %s does not point at its tie", l.Node)
				}
				// StoredIndex finds each effective weight in the stored
				// tensor.
				for q := 0; q < l.Params(); q++ {
					k := l.StoredIndex(q)
					if want := float64(k%5) - 1.5; l.At(q) != want {
						t.Fatalf("layer %s: W[%d] = %g, stored element %d is %g", l.Node, q, l.At(q), k, want)
					}
				}
			}
			if !slices.Equal(layouts, c.layouts) || len(tie.Gathers) != c.gathers || tie.Init != "W" || tie.Size() != 16 {
				t.Errorf("tie %+v: layouts %v gathers %d, want %v and %d", tie, layouts, len(tie.Gathers), c.layouts, c.gathers)
			}
			// A clone has its own tie over its own layers.
			cl := net.Clone()
			if cl.Ties[0] == tie || cl.Ties[0].Layers[0] != cl.Layers[tie.Layers[0].Index] || cl.Layers[tie.Layers[0].Index].Tie != cl.Ties[0] {
				t.Error("Clone does not remap the tie")
			}
		})
	}
}
