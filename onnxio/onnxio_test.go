package onnxio

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// bundled are the real PyTorch exports copied from shared/models.
var bundled = []string{"mnist_mlp_gemm.onnx", "mnist_mlp_matmul.onnx", "pde_mlp.onnx"}

func bundledPath(name string) string { return filepath.Join("..", "testdata", "models", name) }

func TestRoundTripBundled(t *testing.T) {
	for _, name := range bundled {
		t.Run(name, func(t *testing.T) {
			in := bundledPath(name)
			m, err := Load(in)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), name)
			if err := m.Save(out, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(in)
			b, _ := os.ReadFile(out)
			if !bytes.Equal(a, b) {
				t.Errorf("saved bytes differ from the input (%d vs %d bytes)", len(b), len(a))
			}
			m2, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m.Proto, m2.Proto) {
				t.Error("round trip is not proto.Equal")
			}
		})
	}
}

func TestRoundTripKeepsUnknownFields(t *testing.T) {
	m, err := Load(bundledPath("pde_mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	// Field 999 of ModelProto and 998 of a node are unknown to any schema.
	extra := []byte{0xba, 0x3e, 0x03, 'a', 'b', 'c'} // field 999, bytes "abc"
	m.Proto.ProtoReflect().SetUnknown(extra)
	node := m.Proto.Graph.Node[0]
	node.ProtoReflect().SetUnknown([]byte{0xb0, 0x3e, 0x07}) // field 998 varint 7
	dir := t.TempDir()
	p := filepath.Join(dir, "u.onnx")
	if err := m.Save(p, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	m2, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m.Proto, m2.Proto) {
		t.Fatal("unknown fields lost")
	}
	if got := m2.Proto.ProtoReflect().GetUnknown(); !bytes.Equal(got, extra) {
		t.Errorf("model unknown fields = %x, want %x", got, extra)
	}
}

func TestExternalDataRoundTrip(t *testing.T) {
	m, err := Load(bundledPath("mnist_mlp_gemm.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ext := filepath.Join(dir, "ext.onnx")
	if err := m.Save(ext, SaveOptions{ExternalThreshold: 1024}); err != nil {
		t.Fatal(err)
	}
	me, err := Load(ext)
	if err != nil {
		t.Fatal(err)
	}
	if locs := me.ExternalLocations(); len(locs) != 1 || locs[0] != "ext.onnx.data" {
		t.Fatalf("external locations %v", locs)
	}
	for _, init := range me.Proto.Graph.Initializer {
		if init.GetDataLocation() == pb.TensorProto_EXTERNAL {
			r, err := parseExternal(ext, init)
			if err != nil {
				t.Fatal(err)
			}
			if r.offset%externalAlign != 0 {
				t.Errorf("%s: offset %d not aligned", init.GetName(), r.offset)
			}
		}
	}
	// The values are the same as the inline model's.
	n1, err := Extract(m, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := Extract(me, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n1.Layers {
		if !equalFloats(n1.Layers[i].Weights64(), n2.Layers[i].Weights64()) || len(n1.Layers[i].Weights64()) == 0 || !equalFloats(n1.Layers[i].B, n2.Layers[i].B) {
			t.Errorf("layer %d differs after externalising", i)
		}
	}
	// Saving the external model elsewhere keeps its layout: proto.Equal.
	dir2 := t.TempDir()
	again := filepath.Join(dir2, "ext.onnx")
	if err := me.Save(again, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	m3, err := Load(again)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(me.Proto, m3.Proto) {
		t.Error("external round trip is not proto.Equal")
	}
	a, _ := os.ReadFile(filepath.Join(dir, "ext.onnx.data"))
	b, _ := os.ReadFile(filepath.Join(dir2, "ext.onnx.data"))
	if !bytes.Equal(a, b) {
		t.Error("external data file differs after a round trip")
	}
	// A short or missing data file is an error naming both files.
	if err := os.WriteFile(filepath.Join(dir2, "ext.onnx.data"), b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(again)
	assertBadInput(t, err, "too short", "ext.onnx.data")
	os.Remove(filepath.Join(dir2, "ext.onnx.data"))
	_, err = Load(again)
	assertBadInput(t, err, "ext.onnx.data", "no such file")
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func assertBadInput(t *testing.T, err error, want ...string) {
	t.Helper()
	var bad *BadInputError
	if !errors.As(err, &bad) {
		t.Fatalf("error %v (%T) is not a *BadInputError", err, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q is not one line", err)
	}
}

func TestBadInput(t *testing.T) {
	good, err := os.ReadFile(bundledPath("pde_mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	tensor, _ := proto.Marshal(&pb.TensorProto{Name: proto.String("x"), Dims: []int64{2}, FloatData: []float32{1, 2}, DataType: proto.Int32(Float)})
	noGraph, _ := proto.Marshal(&pb.ModelProto{IrVersion: proto.Int64(7), ProducerName: proto.String("x")})
	m := &pb.ModelProto{}
	if err := proto.Unmarshal(good, m); err != nil {
		t.Fatal(err)
	}
	m.Graph.Initializer[0].RawData = m.Graph.Initializer[0].RawData[:8]
	shortTensor, _ := proto.Marshal(m)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"text", []byte("hello, this is not a model\n"), "not an ONNX model"},
		{"truncated", good[:len(good)/2], "not an ONNX model"},
		{"tensor", tensor, "not an ONNX model"},
		{"no graph", noGraph, "no graph"},
		{"short tensor", shortTensor, "bytes of data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.onnx")
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			assertBadInput(t, err, c.want, p)
		})
	}
	_, err = Load(filepath.Join(t.TempDir(), "missing.onnx"))
	assertBadInput(t, err, "missing.onnx", "no such file")
}

func TestExtractBundled(t *testing.T) {
	nets := map[string]*Network{}
	for _, name := range bundled {
		m, err := Load(bundledPath(name))
		if err != nil {
			t.Fatal(err)
		}
		n, err := Extract(m, ExtractOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !n.Evaluable {
			t.Fatalf("%s: not evaluable: %s", name, n.Reason)
		}
		nets[name] = n
	}
	want := [][2]int{{300, 784}, {100, 300}, {10, 100}}
	g, mm := nets["mnist_mlp_gemm.onnx"], nets["mnist_mlp_matmul.onnx"]
	for _, n := range []*Network{g, mm} {
		if len(n.Layers) != 3 {
			t.Fatalf("%d layers, want 3", len(n.Layers))
		}
		for i, l := range n.Layers {
			if l.Out != want[i][0] || l.In != want[i][1] || l.B == nil || !l.Prunable {
				t.Errorf("layer %d: %dx%d bias=%v prunable=%v", i, l.Out, l.In, l.B != nil, l.Prunable)
			}
		}
	}
	for i := range g.Layers {
		if !equalFloats(g.Layers[i].Weights64(), mm.Layers[i].Weights64()) || len(g.Layers[i].Weights64()) == 0 || !equalFloats(g.Layers[i].B, mm.Layers[i].B) {
			t.Errorf("layer %d: Gemm and MatMul files extract different W or b", i)
		}
		if g.Layers[i].WeightLayout != LayoutOutIn || mm.Layers[i].WeightLayout != LayoutInOut {
			t.Errorf("layer %d: layouts %v and %v", i, g.Layers[i].WeightLayout, mm.Layers[i].WeightLayout)
		}
		if mm.Layers[i].BiasSide != 0 || mm.Layers[i].Pattern != "MatMul+Add" {
			t.Errorf("layer %d: bias side %d, pattern %s", i, mm.Layers[i].BiasSide, mm.Layers[i].Pattern)
		}
	}
}

func FuzzLoad(f *testing.F) {
	// The small real model only: megabyte seeds make each mutation slow.
	b, err := os.ReadFile(bundledPath("pde_mlp.onnx"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	small, _ := proto.Marshal(&pb.ModelProto{IrVersion: proto.Int64(7), Graph: &pb.GraphProto{
		Node: []*pb.NodeProto{
			{OpType: proto.String("Identity"), Input: []string{"W"}, Output: []string{"Wi"}},
			{OpType: proto.String("Gemm"), Input: []string{"x", "Wi", "b"}, Output: []string{"y"}, Attribute: []*pb.AttributeProto{{Name: proto.String("transB"), I: proto.Int64(1), Type: pb.AttributeProto_INT.Enum()}}},
		},
		Initializer: []*pb.TensorProto{
			{Name: proto.String("W"), Dims: []int64{2, 2}, DataType: proto.Int32(Float), FloatData: []float32{1, 2, 3, 4}},
			{Name: proto.String("b"), Dims: []int64{2}, DataType: proto.Int32(Float), RawData: make([]byte, 8)},
		},
		Input:  []*pb.ValueInfoProto{{Name: proto.String("x")}},
		Output: []*pb.ValueInfoProto{{Name: proto.String("y")}},
	}})
	f.Add(small)
	f.Add([]byte{})
	f.Add([]byte("\x08\x07\x3a\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		defer func() {
			// A small file that takes seconds is a bug (unbounded work).
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%d bytes took %s", len(data), d)
			}
		}()
		p := filepath.Join(dir, "f.onnx")
		m, err := Parse(data, p)
		if err != nil {
			var bad *BadInputError
			if !errors.As(err, &bad) {
				t.Fatalf("error %v is not a *BadInputError", err)
			}
			return
		}
		if n, err := Extract(m, ExtractOptions{}); err == nil && n.Evaluable {
			_ = n.Prunable()
		}
	})
}
