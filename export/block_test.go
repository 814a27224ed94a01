package export

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
)

// TestBlockWrite: nn.TransformerDecoder's cross-attention reads its packed
// in_proj_weight and in_proj_bias through Slice nodes, as q rows and
// packed k/v rows. Writing those layers (all blocks, or only some) puts
// each block's weights and bias back into the one stored tensor, in every
// format: the graph's nodes stay as the exporter wrote them, rows of a
// block that is not updated keep their values, and every other tensor is
// byte-identical.
func TestBlockWrite(t *testing.T) {
	path := filepath.Join("..", "testdata", "zoo", "decoder_op13.onnx")
	const w0, b0 = "decoder.layers.0.multihead_attn.in_proj_weight", "decoder.layers.0.multihead_attn.in_proj_bias"
	cases := []struct {
		name   string
		blocks []int // row offsets of the blocks updated
		format Format
	}{
		{"q and k/v, dense", []int{0, 32}, Dense},
		{"q and k/v, sparse constant", []int{0, 32}, Constant},
		{"q and k/v, sparse initializer", []int{0, 32}, SparseInitializer},
		{"k/v only", []int{32}, Dense},
		{"q only", []int{0}, Dense},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := onnxio.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			origW, origB := floatsOf(t, m, w0), floatsOf(t, m, b0)
			wantW, wantB := slices.Clone(origW), slices.Clone(origB)
			var ups []Update
			for _, l := range net.Layers {
				if l.WeightInit != w0 || !slices.Contains(c.blocks, l.WeightRow0) {
					continue
				}
				if !l.Prunable || l.Tie == nil || l.WeightRows != 96 {
					t.Fatalf("layer %s: prunable %v (%s), tie %v, rows %d", l.Name, l.Prunable, l.Reason, l.Tie != nil, l.WeightRows)
				}
				w := slices.Clone(l.Weights64())
				for q := range w {
					if q%2 == 0 {
						w[q] = 0
					}
					wantW[l.StoredIndex(q)] = w[q]
				}
				b := make([]float64, l.Out)
				for o := range b {
					b[o] = float64(float32(l.B[o] + 0.25*float64(o+l.WeightRow0)))
					wantB[l.BiasOff+o] = b[o]
				}
				ups = append(ups, Update{Layer: l, W: w, B: b})
			}
			if len(ups) != len(c.blocks) {
				t.Fatalf("%d block layers of %s found, want %d", len(ups), w0, len(c.blocks))
			}
			out, res, err := Apply(m, ups, Options{Format: c.format})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(ups) || res[0].Tensor != w0 || res[0].Format != c.format || res[0].Size != 96*32 {
				t.Errorf("results %+v", res)
			}
			for k := 1; k < len(res); k++ {
				if res[k].TiedWith != res[0].Layer || res[k].Bytes != 0 {
					t.Errorf("result %d: %+v, want tied with %s", k, res[k], res[0].Layer)
				}
			}
			// The graph: nodes as they were (a sparse Constant for the
			// weight aside), every other initializer byte-identical.
			g0, g1 := m.Proto.GetGraph(), out.Proto.GetGraph()
			var nodes []string
			for _, n := range g1.GetNode() {
				if n.GetOpType() == "Constant" && strings.HasSuffix(n.GetName(), "_ecprune_sparse") {
					continue
				}
				nodes = append(nodes, n.String())
			}
			if len(nodes) != len(g0.GetNode()) {
				t.Fatalf("%d nodes, want %d", len(nodes), len(g0.GetNode()))
			}
			for k, n := range g0.GetNode() {
				if nodes[k] != n.String() {
					t.Fatalf("node %d changed: %s", k, nodes[k])
				}
			}
			for _, t0 := range g0.GetInitializer() {
				if t0.GetName() == w0 || t0.GetName() == b0 {
					continue
				}
				found := false
				for _, t1 := range g1.GetInitializer() {
					if t1.GetName() == t0.GetName() {
						found = true
						if !proto.Equal(t0, t1) {
							t.Errorf("initializer %s changed", t0.GetName())
						}
					}
				}
				if !found {
					t.Errorf("initializer %s gone", t0.GetName())
				}
			}
			gotW := storedFloats(t, out, w0)
			gotB := floatsOf(t, out, b0)
			for k := range wantW {
				if math.Float64bits(gotW[k]) != math.Float64bits(float64(float32(wantW[k]))) {
					t.Fatalf("%s[%d] = %g, want %g", w0, k, gotW[k], wantW[k])
				}
			}
			for k := range wantB {
				if math.Float64bits(gotB[k]) != math.Float64bits(float64(float32(wantB[k]))) {
					t.Fatalf("%s[%d] = %g, want %g", b0, k, gotB[k], wantB[k])
				}
			}
		})
	}
}

// floatsOf decodes a dense initializer.
func floatsOf(t *testing.T, m *onnxio.Model, name string) []float64 {
	t.Helper()
	for _, x := range m.Proto.GetGraph().GetInitializer() {
		if x.GetName() == name {
			v, err := m.Floats(x)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no initializer %s", name)
	return nil
}

// storedFloats decodes a weight wherever the writer put it: a dense or
// sparse initializer, or a Constant's sparse_value.
func storedFloats(t *testing.T, m *onnxio.Model, name string) []float64 {
	t.Helper()
	g := m.Proto.GetGraph()
	for _, x := range g.GetInitializer() {
		if x.GetName() == name {
			return floatsOf(t, m, name)
		}
	}
	sp := func(vals, idx []float64, size int64) []float64 {
		out := make([]float64, size)
		for k, i := range idx {
			out[int(i)] = vals[k]
		}
		return out
	}
	for _, s := range g.GetSparseInitializer() {
		if s.GetValues().GetName() == name {
			v, err1 := m.Floats(s.GetValues())
			i, err2 := m.Ints(s.GetIndices())
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			return sp(v, toFloats(i), onnxio.NumElements(s.GetDims()))
		}
	}
	for _, n := range g.GetNode() {
		if n.GetOpType() == "Constant" && len(n.GetOutput()) == 1 && n.GetOutput()[0] == name {
			s := onnxio.Attr(n, "sparse_value").GetSparseTensor()
			v, err1 := m.Floats(s.GetValues())
			i, err2 := m.Ints(s.GetIndices())
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			return sp(v, toFloats(i), onnxio.NumElements(s.GetDims()))
		}
	}
	t.Fatalf("no tensor %s", name)
	return nil
}

func toFloats(v []int64) []float64 {
	out := make([]float64, len(v))
	for k, x := range v {
		out[k] = float64(x)
	}
	return out
}
