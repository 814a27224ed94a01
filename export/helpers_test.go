package export

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

var realModels = []string{"mnist_mlp_gemm.onnx", "mnist_mlp_matmul.onnx", "pde_mlp.onnx"}

// realModel returns the path of a bundled model.
func realModel(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "testdata", "models", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("bundled model: %v", err)
	}
	return p
}

func load(t *testing.T, path string) (*onnxio.Model, *onnxio.Network) {
	t.Helper()
	m, err := onnxio.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m, net
}

// pruneUpdates zeroes the fraction frac of each prunable layer's weights
// with the smallest magnitudes and shifts every bias by a small
// neuron-dependent amount (giving bias-free layers a bias when withBias).
func pruneUpdates(net *onnxio.Network, frac float64, withBias bool) []Update {
	var ups []Update
	for _, l := range net.Prunable() {
		w := append([]float64(nil), l.Weights64()...)
		order := make([]int, len(w))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return math.Abs(w[order[a]]) < math.Abs(w[order[b]]) })
		k := int(math.Floor(frac*float64(len(w)) + 0.5))
		for _, i := range order[:k] {
			w[i] = 0
		}
		u := Update{Layer: l, W: w}
		if l.B != nil || withBias {
			u.B = make([]float64, l.Out)
			for o := range u.B {
				if l.B != nil {
					u.B[o] = l.B[o]
				}
				u.B[o] += 0.01 * float64(o%5-2)
			}
		}
		ups = append(ups, u)
	}
	return ups
}

// expectStored is what reading back a value written through element type
// dt with scale s (alpha or beta) gives.
func expectStored(dt int32, v, s float64) float64 { return s * stored(dt, v, s) }

// checkRoundTrip re-extracts the model at path and checks that every
// updated layer (matched by its main node) holds the update's W and B as
// the element types store them.
func checkRoundTrip(t *testing.T, path string, ups []Update) *onnxio.Network {
	t.Helper()
	_, net := load(t, path)
	byNode := map[string]*onnxio.Layer{}
	for _, l := range net.Layers {
		byNode[l.Node] = l
	}
	for _, u := range ups {
		l := byNode[u.Layer.Node]
		if l == nil {
			t.Fatalf("%s: layer %s not found after export", path, u.Layer.Node)
		}
		if l.Out != u.Layer.Out || l.In != u.Layer.In {
			t.Fatalf("%s: layer %s is %dx%d, was %dx%d", path, l.Node, l.Out, l.In, u.Layer.Out, u.Layer.In)
		}
		for k, w := range u.W {
			if want := expectStored(u.Layer.WeightType, w, u.Layer.Alpha); l.At(k) != want {
				t.Fatalf("%s: layer %s W[%d] = %v, want %v (update %v)", path, l.Node, k, l.At(k), want, w)
			}
		}
		wantB := u.B
		if wantB == nil {
			wantB = u.Layer.B
		}
		if len(l.B) != len(wantB) {
			t.Fatalf("%s: layer %s has %d biases, want %d", path, l.Node, len(l.B), len(wantB))
		}
		for o, b := range wantB {
			want := b // an untouched bias reads back exactly
			if u.B != nil {
				want = expectStored(l.BiasType, b, l.Beta)
			}
			if l.B[o] != want {
				t.Fatalf("%s: layer %s B[%d] = %v, want %v", path, l.Node, o, l.B[o], want)
			}
		}
	}
	return net
}

// stripModel clones mp without the named tensors (initializers, sparse
// initializers, graph inputs), the named nodes and the ecprune metadata
// entry, so that the rest of two models can be compared with proto.Equal.
func stripModel(mp *pb.ModelProto, tensors, nodes map[string]bool) *pb.ModelProto {
	c := proto.Clone(mp).(*pb.ModelProto)
	g := c.Graph
	var inits []*pb.TensorProto
	for _, t := range g.Initializer {
		if !tensors[t.GetName()] {
			inits = append(inits, t)
		}
	}
	g.Initializer = inits
	var sparse []*pb.SparseTensorProto
	for _, s := range g.SparseInitializer {
		if !tensors[s.GetValues().GetName()] {
			sparse = append(sparse, s)
		}
	}
	g.SparseInitializer = sparse
	var ins []*pb.ValueInfoProto
	for _, v := range g.Input {
		if !tensors[v.GetName()] {
			ins = append(ins, v)
		}
	}
	g.Input = ins
	var ns []*pb.NodeProto
	for _, n := range g.Node {
		if !nodes[n.GetName()] {
			ns = append(ns, n)
		}
	}
	g.Node = ns
	var props []*pb.StringStringEntryProto
	for _, kv := range c.MetadataProps {
		if kv.GetKey() != MetadataKey {
			props = append(props, kv)
		}
	}
	c.MetadataProps = props
	return c
}

// changedNames lists what an export may change: the updated layers'
// weights and biases, plus every tensor and node name of the result that
// the source does not have.
func changedNames(src, res *pb.ModelProto, ups []Update) (tensors, nodes map[string]bool) {
	tensors, nodes = map[string]bool{}, map[string]bool{}
	for _, u := range ups {
		tensors[u.Layer.WeightInit] = true
		if u.B != nil && u.Layer.BiasInit != "" {
			tensors[u.Layer.BiasInit] = true
		}
	}
	old := map[string]bool{}
	for _, t := range src.Graph.Initializer {
		old[t.GetName()] = true
	}
	for _, n := range src.Graph.Node {
		old["node:"+n.GetName()] = true
	}
	for _, t := range res.Graph.Initializer {
		if !old[t.GetName()] {
			tensors[t.GetName()] = true
		}
	}
	for _, n := range res.Graph.Node {
		if !old["node:"+n.GetName()] {
			nodes[n.GetName()] = true
		}
	}
	return tensors, nodes
}

// assertUnchangedOutside fails unless src and res are proto.Equal once the
// changed tensors, the new nodes and the nodes named in modified are taken
// out of both.
func assertUnchangedOutside(t *testing.T, src, res *pb.ModelProto, ups []Update, modified ...string) {
	t.Helper()
	tensors, nodes := changedNames(src, res, ups)
	for _, n := range modified {
		nodes[n] = true
	}
	a, b := stripModel(src, tensors, nodes), stripModel(res, tensors, nodes)
	if !proto.Equal(a, b) {
		t.Fatalf("the model changed outside the pruned tensors:\nsource: %v\nresult: %v", a.Graph, b.Graph)
	}
}

// vi declares a tensor value; a negative dimension is the symbolic "N".
func vi(name string, elem int32, dims ...int64) *pb.ValueInfoProto {
	s := &pb.TensorShapeProto{}
	for _, d := range dims {
		if d < 0 {
			s.Dim = append(s.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}})
		} else {
			s.Dim = append(s.Dim, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
	}
	return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{
		TensorType: &pb.TypeProto_Tensor{ElemType: proto.Int32(elem), Shape: s}}}}
}

func node(name, op string, in []string, out string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	return &pb.NodeProto{Name: proto.String(name), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs}
}

func attrF(name string, v float32) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func attrI(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// ramp makes n distinct values of both signs.
func ramp(n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = scale * float64((i*7)%n-n/2+1) / float64(n)
	}
	return v
}

// smallModel wraps nodes and initializers into a model with input x
// [N,in] and output y [N,out] of element type dt.
func smallModel(ir, opset int64, dt int32, in, out int64, nodes []*pb.NodeProto, inits []*pb.TensorProto, initsAsInputs bool) *pb.ModelProto {
	g := &pb.GraphProto{
		Name:        proto.String("small"),
		DocString:   proto.String("a test graph"),
		Node:        nodes,
		Initializer: inits,
		Input:       []*pb.ValueInfoProto{vi("x", dt, -1, in)},
		Output:      []*pb.ValueInfoProto{vi("y", dt, -1, out)},
	}
	if initsAsInputs {
		for _, t := range inits {
			g.Input = append(g.Input, vi(t.GetName(), t.GetDataType(), t.GetDims()...))
		}
	}
	return &pb.ModelProto{
		IrVersion:    proto.Int64(ir),
		ProducerName: proto.String("export_test"),
		OpsetImport:  []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
		Graph:        g,
	}
}

// writeProto saves a model proto to dir/name.
func writeProto(t *testing.T, mp *pb.ModelProto, dir, name string) string {
	t.Helper()
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
