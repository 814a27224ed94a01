package checker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

func valueInfo(name string, elem int32) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(elem),
			Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
				{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}},
				{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 3}},
			}},
		}}},
	}
}

// writeModel writes a one-node model x -> op -> y, edited by edit, to a
// temporary file and returns its path.
func writeModel(t *testing.T, edit func(*onnxpb.ModelProto)) string {
	t.Helper()
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(7),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String("g"),
			Node:   []*onnxpb.NodeProto{{Input: []string{"x"}, Output: []string{"y"}, OpType: proto.String("Relu")}},
			Input:  []*onnxpb.ValueInfoProto{valueInfo("x", 1)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y", 1)},
		},
	}
	edit(m)
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBundledModelsPass(t *testing.T) {
	Require(t)
	for _, name := range []string{"mnist_mlp_gemm.onnx", "mnist_mlp_matmul.onnx", "pde_mlp.onnx"} {
		for _, full := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				Check(t, filepath.Join("../../testdata/models", name), full)
			})
		}
	}
}

func TestCheckErr(t *testing.T) {
	Require(t)
	tests := []struct {
		name string
		edit func(*onnxpb.ModelProto)
		// wantErr is the text the checker must report; "" means valid.
		wantErr, wantFullErr string
	}{
		{"valid", func(*onnxpb.ModelProto) {}, "", ""},
		{"unknown input name",
			func(m *onnxpb.ModelProto) { m.Graph.Node[0].Input[0] = "nowhere" },
			"nowhere", "nowhere"},
		{"unknown op",
			func(m *onnxpb.ModelProto) { m.Graph.Node[0].OpType = proto.String("NoSuchOp") },
			"NoSuchOp", "NoSuchOp"},
		// A limitation worth knowing: onnx 1.12 (Debian 12) accepts a graph
		// output that no node produces, even with full_check. ORT rejects it.
		{"output never produced (accepted)",
			func(m *onnxpb.ModelProto) { m.Graph.Output[0].Name = proto.String("z") },
			"", ""},
		// Only strict shape inference sees that Relu of float is not int64.
		{"wrong declared output type",
			func(m *onnxpb.ModelProto) { m.Graph.Output[0] = valueInfo("y", 7) },
			"", "elem type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeModel(t, tc.edit)
			for _, c := range []struct {
				full bool
				want string
			}{{false, tc.wantErr}, {true, tc.wantFullErr}} {
				err := CheckErr(p, c.full)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("full_check=%v: unexpected error %v", c.full, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("full_check=%v: error %v, want one containing %q", c.full, err, c.want)
				case err != nil:
					t.Logf("full_check=%v: %v", c.full, err)
				case err != nil && errors.Is(err, ErrUnavailable):
					t.Errorf("full_check=%v: invalid model reported as unavailable checker: %v", c.full, err)
				}
			}
		})
	}
}

func TestCheckErrMissingFile(t *testing.T) {
	err := CheckErr(filepath.Join(t.TempDir(), "none.onnx"), false)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v, want one wrapping os.ErrNotExist", err)
	}
}
