package onnxio

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// TestFloat32Weights: the view is float32(W) bit for bit where the stored
// tensor is W (Gemm transB=1 exports, raw or external data), nil where it
// is not (MatMul's [in, out] layout, a changed W, another model).
func TestFloat32Weights(t *testing.T) {
	gemm, err := Load(bundledPath("mnist_mlp_gemm.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(t.TempDir(), "ext.onnx")
	if err := gemm.Save(ext, SaveOptions{ExternalThreshold: 1024}); err != nil {
		t.Fatal(err)
	}
	external, err := Load(ext)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Model{gemm, external} {
		net, err := Extract(m, ExtractOptions{})
		if err != nil {
			t.Fatal(err)
		}
		views := 0
		for _, l := range net.Layers {
			v := m.Float32Weights(l)
			if v == nil {
				if l.WeightLayout == LayoutOutIn && l.Alpha == 1 && l.WeightType == Float {
					t.Errorf("%s: no view of a [out, in] FLOAT weight", l.Name)
				}
				continue
			}
			views++
			for q, w := range l.W {
				if math.Float32bits(v[q]) != math.Float32bits(float32(w)) {
					t.Fatalf("%s[%d]: view %v, W %v", l.Name, q, v[q], w)
				}
			}
			// A changed W has no view.
			old := l.W[3]
			l.W[3] += 1
			if m.Float32Weights(l) != nil {
				t.Errorf("%s: view of a changed W", l.Name)
			}
			l.W[3] = old
		}
		if views == 0 {
			t.Errorf("%s: no layer had a view", m.Path)
		}
	}
	mm, err := Load(bundledPath("mnist_mlp_matmul.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	net, err := Extract(mm, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range net.Layers {
		if l.WeightLayout == LayoutInOut && mm.Float32Weights(l) != nil {
			t.Errorf("%s: view of an [in, out] weight", l.Name)
		}
		if gemm.Float32Weights(l) != nil {
			t.Errorf("%s: view from another model", l.Name)
		}
	}
	var nilModel *Model
	if nilModel.Float32Weights(net.Layers[0]) != nil {
		t.Error("view from a nil model")
	}
}

// TestCloneSharingData: the clone is proto.Equal, marshals to the same
// bytes, shares the raw bytes of initializers, and leaves the source as
// it was; changing the clone's structure does not touch the source.
func TestCloneSharingData(t *testing.T) {
	for _, name := range bundled {
		m, err := Load(bundledPath(name))
		if err != nil {
			t.Fatal(err)
		}
		before, err := proto.Marshal(m.Proto)
		if err != nil {
			t.Fatal(err)
		}
		c := CloneSharingData(m.Proto)
		if !proto.Equal(c, m.Proto) {
			t.Fatalf("%s: clone differs", name)
		}
		after, _ := proto.Marshal(m.Proto)
		cb, _ := proto.Marshal(c)
		if !bytes.Equal(before, after) || !bytes.Equal(before, cb) {
			t.Fatalf("%s: bytes differ", name)
		}
		shared := 0
		for i, x := range m.Proto.Graph.Initializer {
			y := c.Graph.Initializer[i]
			if x == y {
				t.Fatalf("%s: tensor %s not cloned", name, x.GetName())
			}
			if len(x.RawData) > 0 {
				if unsafe.SliceData(x.RawData) != unsafe.SliceData(y.RawData) {
					t.Fatalf("%s: raw data of %s copied", name, x.GetName())
				}
				shared++
			}
		}
		if shared == 0 {
			t.Fatalf("%s: no raw data", name)
		}
		c.Graph.Initializer[0] = &pb.TensorProto{Name: proto.String("other")}
		c.Graph.Node[0].Input[0] = "changed"
		after, _ = proto.Marshal(m.Proto)
		if !bytes.Equal(before, after) {
			t.Fatalf("%s: editing the clone changed the source", name)
		}
	}
	if c := CloneSharingData(&pb.ModelProto{IrVersion: proto.Int64(7)}); c.GetIrVersion() != 7 {
		t.Fatal("graph-less model not cloned")
	}
}

// TestExtractNoSharedWeights: layers never share W storage with each other
// or with ops' constants, whether or not the weight was decoded in place.
func TestExtractNoSharedWeights(t *testing.T) {
	for _, name := range bundled {
		m, err := Load(bundledPath(name))
		if err != nil {
			t.Fatal(err)
		}
		net, err := Extract(m, ExtractOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[*float64]string{}
		for _, l := range net.Layers {
			p := unsafe.SliceData(l.W)
			if prev, dup := seen[p]; dup {
				t.Fatalf("%s: %s and %s share W", name, l.Name, prev)
			}
			seen[p] = l.Name
		}
		for _, op := range net.Ops {
			if op.Const != nil && len(op.Const.Data) > 0 {
				if l, dup := seen[unsafe.SliceData(op.Const.Data)]; dup {
					t.Fatalf("%s: op %s constant shares %s's W", name, op.Node, l)
				}
			}
		}
	}
}
