package checker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestOneProcess: checks share one Python process, from any number of
// goroutines, and a process that dies is replaced at the next check with
// only the check it was serving failing.
func TestOneProcess(t *testing.T) {
	Require(t)
	valid := writeModel(t, func(*onnxpb.ModelProto) {})
	invalid := writeModel(t, func(m *onnxpb.ModelProto) { m.Graph.Node[0].OpType = proto.String("NoSuchOp") })
	pid := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.cmd == nil {
			return 0
		}
		return srv.cmd.Process.Pid
	}
	if err := CheckErr(valid, true); err != nil {
		t.Fatal(err)
	}
	first := pid()
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for k := range errs {
		wg.Go(func() {
			p := valid
			if k%2 == 1 {
				p = invalid
			}
			errs[k] = CheckErr(p, k%4 < 2)
		})
	}
	wg.Wait()
	for k, err := range errs {
		if (err != nil) != (k%2 == 1) {
			t.Errorf("check %d: error %v", k, err)
		}
	}
	if got := pid(); got != first {
		t.Fatalf("checker process %d replaced by %d without a failure", first, got)
	}

	srv.mu.Lock()
	srv.cmd.Process.Kill()
	srv.mu.Unlock()
	if err := CheckErr(valid, false); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("check on a killed process: error %v, want a failure of that check", err)
	}
	if err := CheckErr(valid, false); err != nil {
		t.Fatalf("check after a restart: %v", err)
	}
	if got := pid(); got == first || got == 0 {
		t.Fatalf("process %d after the kill, want a new one", got)
	}
}

// TestOddPaths: a path with a newline or quotes reaches the process intact,
// and a relative path is resolved where the test runs.
func TestOddPaths(t *testing.T) {
	Require(t)
	src := writeModel(t, func(*onnxpb.ModelProto) {})
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a \"quoted\"\nname.onnx")
	if err := os.WriteFile(odd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(".", "../../testdata/models/pde_mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{odd, rel} {
		if err := CheckErr(p, true); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
}
