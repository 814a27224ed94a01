package export

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
	"github.com/ecprune/ecprune/testmodels"
	"github.com/ecprune/ecprune/testmodels/checker"
)

// TestRealModelsRoundTrip prunes every layer of the bundled models, writes
// them back in each format, and checks that the saved file reads back to
// exactly the update, passes the ONNX checker, and is unchanged elsewhere.
func TestRealModelsRoundTrip(t *testing.T) {
	for _, name := range realModels {
		for _, frac := range []float64{0.2, 0.9} {
			for _, f := range []Format{Auto, Constant, SparseInitializer, Dense} {
				t.Run(name+"/"+string(f)+"/"+map[float64]string{0.2: "20%", 0.9: "90%"}[frac], func(t *testing.T) {
					src, net := load(t, realModel(t, name))
					orig := proto.Clone(src.Proto)
					ups := pruneUpdates(net, frac, false)
					res, rs, err := Apply(src, ups, Options{Format: f, Metadata: `{"sparsity":0.5}`})
					if err != nil {
						t.Fatal(err)
					}
					if !proto.Equal(src.Proto, orig) {
						t.Fatal("Apply modified its input model")
					}
					if res.Path != src.Path || res.Dir != src.Dir {
						t.Fatalf("result path %q dir %q, want the source's %q %q", res.Path, res.Dir, src.Path, src.Dir)
					}
					if len(rs) != len(ups) {
						t.Fatalf("%d results for %d updates", len(rs), len(ups))
					}
					for i, r := range rs {
						l := ups[i].Layer
						nnz := 0
						for _, w := range ups[i].W {
							if w != 0 {
								nnz++
							}
						}
						if r.Tensor != l.WeightInit || r.Layer != l.Name || r.NNZ != nnz || r.Size != l.Out*l.In {
							t.Errorf("result %+v, want tensor %s, %d non-zeros of %d", r, l.WeightInit, nnz, l.Out*l.In)
						}
						want := f
						if f == Auto {
							want = Dense
							if frac == 0.9 {
								want = Constant // 10% density: the sparse form is far smaller
							}
						}
						if r.Format != want {
							t.Errorf("%s: format %s, want %s", r.Tensor, r.Format, want)
						}
						if r.Format == Dense && r.Bytes != r.DenseBytes || r.Format != Dense && frac == 0.9 && r.Bytes >= r.DenseBytes {
							t.Errorf("%s: %s form is %d bytes, dense %d", r.Tensor, r.Format, r.Bytes, r.DenseBytes)
						}
					}
					out := filepath.Join(t.TempDir(), "pruned.onnx")
					if err := Save(res, out, 0); err != nil {
						t.Fatal(err)
					}
					checkRoundTrip(t, out, ups)
					assertUnchangedOutside(t, src.Proto, res.Proto, ups)
					assertLayout(t, res.Proto, rs)
					if got := metadata(res.Proto); got != `{"sparsity":0.5}` {
						t.Errorf("metadata %q", got)
					}
					// full_check (strict shape inference) types a sparse
					// initializer as sparse_tensor, which Gemm refuses (ONNX.md).
					checker.Check(t, out, !hasFormat(rs, SparseInitializer))
				})
			}
		}
	}
}

func hasFormat(rs []TensorResult, f Format) bool {
	for _, r := range rs {
		if r.Format == f {
			return true
		}
	}
	return false
}

func metadata(mp *pb.ModelProto) string {
	for _, kv := range mp.MetadataProps {
		if kv.GetKey() == MetadataKey {
			return kv.GetValue()
		}
	}
	return ""
}

// assertLayout checks where each weight went: a dense initializer, a
// Constant node placed before its first reader, or a sparse initializer,
// with the sparse encoding ONNX wants and never a negative zero.
func assertLayout(t *testing.T, mp *pb.ModelProto, rs []TensorResult) {
	t.Helper()
	g := mp.Graph
	for _, r := range rs {
		var init *pb.TensorProto
		for _, x := range g.Initializer {
			if x.GetName() == r.Tensor {
				if init != nil {
					t.Fatalf("%s: initializer listed twice", r.Tensor)
				}
				init = x
			}
		}
		var sparse []*pb.SparseTensorProto
		for _, s := range g.SparseInitializer {
			if s.GetValues().GetName() == r.Tensor {
				sparse = append(sparse, s)
			}
		}
		producer, firstUse := -1, -1
		for i, n := range g.Node {
			for _, o := range n.Output {
				if o == r.Tensor {
					producer = i
				}
			}
			for _, in := range n.Input {
				if in == r.Tensor && firstUse < 0 {
					firstUse = i
				}
			}
		}
		inputs := 0
		for _, v := range g.Input {
			if v.GetName() == r.Tensor {
				inputs++
			}
		}
		switch r.Format {
		case Dense:
			if init == nil || len(sparse) > 0 || producer >= 0 {
				t.Fatalf("%s: dense weight not a plain initializer", r.Tensor)
			}
			assertNoNegativeZero(t, init)
		case Constant:
			if init != nil || len(sparse) > 0 || producer < 0 || inputs > 0 {
				t.Fatalf("%s: constant weight still an initializer, sparse initializer or graph input", r.Tensor)
			}
			if producer > firstUse {
				t.Fatalf("%s: Constant node %d after its first reader %d", r.Tensor, producer, firstUse)
			}
			n := g.Node[producer]
			if n.GetOpType() != "Constant" || len(n.Attribute) != 1 || n.Attribute[0].GetName() != "sparse_value" ||
				n.Attribute[0].GetType() != pb.AttributeProto_SPARSE_TENSOR {
				t.Fatalf("%s: produced by %v", r.Tensor, n)
			}
			assertSparse(t, n.Attribute[0].GetSparseTensor(), r)
		case SparseInitializer:
			if init != nil || len(sparse) != 1 || producer >= 0 || inputs > 0 {
				t.Fatalf("%s: sparse initializer not alone (initializer %v, %d sparse, producer %d, %d inputs)", r.Tensor, init != nil, len(sparse), producer, inputs)
			}
			assertSparse(t, sparse[0], r)
		default:
			t.Fatalf("%s: format %q", r.Tensor, r.Format)
		}
	}
}

func assertSparse(t *testing.T, s *pb.SparseTensorProto, r TensorResult) {
	t.Helper()
	v, ix := s.GetValues(), s.GetIndices()
	if v.GetName() != r.Tensor || len(v.GetDims()) != 1 || v.GetDims()[0] != int64(r.NNZ) || v.RawData == nil {
		t.Fatalf("%s: sparse values %v %v", r.Tensor, v.GetName(), v.GetDims())
	}
	if ix.GetDataType() != onnxio.Int64 || ix.RawData != nil || len(ix.Int64Data) != r.NNZ ||
		len(ix.GetDims()) != 1 || ix.GetDims()[0] != int64(r.NNZ) {
		t.Fatalf("%s: sparse indices must be INT64 [NNZ] in int64_data: type %d dims %v raw %d", r.Tensor, ix.GetDataType(), ix.GetDims(), len(ix.RawData))
	}
	if onnxio.NumElements(s.GetDims()) != int64(r.Size) {
		t.Fatalf("%s: sparse dims %v for %d elements", r.Tensor, s.GetDims(), r.Size)
	}
	for k, i := range ix.Int64Data {
		if i < 0 || i >= int64(r.Size) || k > 0 && i <= ix.Int64Data[k-1] {
			t.Fatalf("%s: index %d = %d not ascending in range", r.Tensor, k, i)
		}
	}
	vals, err := onnxio.DecodeFloats(v)
	if err != nil {
		t.Fatal(err)
	}
	for k, x := range vals {
		if x == 0 {
			t.Fatalf("%s: sparse value %d is zero", r.Tensor, k)
		}
	}
}

// assertNoNegativeZero fails if a float tensor's data holds -0.0.
func assertNoNegativeZero(t *testing.T, x *pb.TensorProto) {
	t.Helper()
	raw := x.RawData
	switch x.GetDataType() {
	case onnxio.Float:
		for i := 0; i+4 <= len(raw); i += 4 {
			if binary.LittleEndian.Uint32(raw[i:]) == 0x80000000 {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i/4)
			}
		}
		for i, v := range x.FloatData {
			if v == 0 && math.Signbit(float64(v)) {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i)
			}
		}
	case onnxio.Float16, onnxio.BFloat16:
		for i := 0; i+2 <= len(raw); i += 2 {
			if binary.LittleEndian.Uint16(raw[i:]) == 0x8000 {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i/2)
			}
		}
		for i, v := range x.Int32Data {
			if v == 0x8000 {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i)
			}
		}
	case onnxio.Double:
		for i := 0; i+8 <= len(raw); i += 8 {
			if binary.LittleEndian.Uint64(raw[i:]) == 1<<63 {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i/8)
			}
		}
		for i, v := range x.DoubleData {
			if v == 0 && math.Signbit(v) {
				t.Fatalf("%s: -0.0 at element %d", x.GetName(), i)
			}
		}
	}
}

// TestAutoPicksSmaller checks that auto's choice is the smaller of the
// dense and constant forms, tensor by tensor, at densities around the
// break-even point.
func TestAutoPicksSmaller(t *testing.T) {
	src, net := load(t, realModel(t, "pde_mlp.onnx"))
	for _, frac := range []float64{0.3, 0.6, 0.7, 0.8, 0.95} {
		ups := pruneUpdates(net, frac, false)
		_, auto, err := Apply(src, ups, Options{Format: Auto})
		if err != nil {
			t.Fatal(err)
		}
		_, cons, err := Apply(src, ups, Options{Format: Constant})
		if err != nil {
			t.Fatal(err)
		}
		_, dense, err := Apply(src, ups, Options{Format: Dense})
		if err != nil {
			t.Fatal(err)
		}
		picked := map[Format]int{}
		for i := range auto {
			want := min(cons[i].Bytes, dense[i].Bytes)
			if auto[i].Bytes != want || auto[i].DenseBytes != dense[i].Bytes {
				t.Errorf("%.0f%% %s: auto %s %d bytes, constant %d, dense %d", frac*100, auto[i].Tensor, auto[i].Format, auto[i].Bytes, cons[i].Bytes, dense[i].Bytes)
			}
			picked[auto[i].Format]++
		}
		t.Logf("pruned %.0f%%: auto picked %v", frac*100, picked)
	}
}

// smallCase is a hand-built model with one pruning job.
type smallCase struct {
	name     string
	model    func() *pb.ModelProto
	opt      Options
	frac     float64
	noBias   bool   // leave biases alone (Update.B nil)
	wantErr  string // Apply must fail with this text
	forceAll bool   // mark every layer prunable (to test refusals in Apply itself)
	full     bool   // the checker's full_check must pass
	check    func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update)
}

func gemmModel(ir, opset int64, asInputs bool, cDims []int64, attrs ...*pb.AttributeProto) func() *pb.ModelProto {
	return func() *pb.ModelProto {
		in := []string{"x", "W"}
		inits := []*pb.TensorProto{onnxio.NewFloatTensor("W", onnxio.Float, []int64{3, 4}, ramp(12, 1))}
		if cDims != nil {
			in = append(in, "C")
			inits = append(inits, onnxio.NewFloatTensor("C", onnxio.Float, cDims, ramp(int(onnxio.NumElements(cDims)), 0.5)))
		}
		as := append(append([]*pb.AttributeProto(nil), attrs...), attrI("transB", 1))
		return smallModel(ir, opset, onnxio.Float, 4, 3, []*pb.NodeProto{node("gemm", "Gemm", in, "y", as...)}, inits, asInputs)
	}
}

// matmulModel: x -> MatMul(W [4,3]) -> Relu -> y, with a value_info entry
// for the MatMul output and no bias.
func matmulModel(ir, opset int64, asInputs bool) func() *pb.ModelProto {
	return func() *pb.ModelProto {
		inits := []*pb.TensorProto{onnxio.NewFloatTensor("W", onnxio.Float, []int64{4, 3}, ramp(12, 1))}
		mp := smallModel(ir, opset, onnxio.Float, 4, 3, []*pb.NodeProto{
			node("mm", "MatMul", []string{"x", "W"}, "h"),
			node("relu", "Relu", []string{"h"}, "y"),
		}, inits, asInputs)
		mp.Graph.ValueInfo = []*pb.ValueInfoProto{vi("h", onnxio.Float, -1, 3)}
		return mp
	}
}

// twoLayerModel: Gemm(x,W1,C1) -> Relu -> MatMul(W2)+Add(b2); W1 [4,4].
func twoLayerModel(ir, opset int64, asInputs bool, dt int32) func() *pb.ModelProto {
	return func() *pb.ModelProto {
		inits := []*pb.TensorProto{
			onnxio.NewFloatTensor("W1", dt, []int64{4, 4}, ramp(16, 1)),
			onnxio.NewFloatTensor("C1", dt, []int64{4}, ramp(4, 0.3)),
			onnxio.NewFloatTensor("W2", dt, []int64{4, 3}, ramp(12, 1)),
			onnxio.NewFloatTensor("b2", dt, []int64{1, 3}, ramp(3, 0.2)),
		}
		return smallModel(ir, opset, dt, 4, 3, []*pb.NodeProto{
			node("g1", "Gemm", []string{"x", "W1", "C1"}, "h1", attrI("transB", 1)),
			node("r1", "Relu", []string{"h1"}, "a1"),
			node("mm2", "MatMul", []string{"a1", "W2"}, "h2"),
			node("add2", "Add", []string{"h2", "b2"}, "y"),
		}, inits, asInputs)
	}
}

func findInit(g *pb.GraphProto, name string) *pb.TensorProto {
	for _, t := range g.Initializer {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

func findNode(g *pb.GraphProto, name string) (int, *pb.NodeProto) {
	for i, n := range g.Node {
		if n.GetName() == name {
			return i, n
		}
	}
	return -1, nil
}

func inputNames(g *pb.GraphProto) []string {
	var out []string
	for _, v := range g.Input {
		out = append(out, v.GetName())
	}
	return out
}

func TestSmallModels(t *testing.T) {
	cases := []smallCase{
		{
			name: "bias-free Gemm gets C", model: gemmModel(8, 13, false, nil), opt: Options{AddBias: true, Format: Dense}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				_, n := findNode(res.Graph, "gemm")
				if len(n.Input) != 3 || n.Input[2] != "W_bias" {
					t.Fatalf("Gemm inputs %v, want a C named W_bias", n.Input)
				}
				if c := findInit(res.Graph, "W_bias"); c == nil || !slices.Equal(c.GetDims(), []int64{3}) {
					t.Fatalf("C initializer %v", c)
				}
				assertUnchangedOutside(t, src, res, ups, "gemm")
			},
		},
		{name: "bias-free Gemm without AddBias", model: gemmModel(8, 13, false, nil), opt: Options{}, wantErr: "no bias"},
		{
			name: "bias-free Gemm with beta 0.5", model: gemmModel(8, 13, false, nil, attrF("beta", 0.5)), opt: Options{AddBias: true}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				c, _ := onnxio.DecodeFloats(findInit(res.Graph, "W_bias"))
				for o, v := range c {
					if want := stored(onnxio.Float, ups[0].B[o], 0.5); v != want {
						t.Fatalf("C[%d] = %v, want b/beta = %v", o, v, want)
					}
				}
			},
		},
		{
			name: "bias-free Gemm with beta 0 gets beta 1", model: gemmModel(8, 13, false, nil, attrF("beta", 0)), opt: Options{AddBias: true}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				_, n := findNode(res.Graph, "gemm")
				if onnxio.AttrFloat(n, "beta", -1) != 1 {
					t.Fatalf("beta %v", onnxio.AttrFloat(n, "beta", -1))
				}
			},
		},
		{name: "beta 0 with a bias update", model: gemmModel(8, 13, false, []int64{3}, attrF("beta", 0)), opt: Options{}, wantErr: "beta is 0"},
		{
			name: "bias-free MatMul gets an Add", model: matmulModel(8, 13, false), opt: Options{AddBias: true, Format: Constant}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				g := res.Graph
				i, mm := findNode(g, "mm")
				add := g.Node[i+1]
				if add.GetOpType() != "Add" || add.Output[0] != "h" || add.Input[0] != mm.Output[0] || mm.Output[0] == "h" || add.Input[1] != "W_bias" {
					t.Fatalf("MatMul %v then %v, want MatMul -> new name -> Add(new, W_bias) -> h", mm, add)
				}
				if g.Node[i-1].GetOpType() != "Constant" || g.Node[i-1].Output[0] != "W" {
					t.Fatalf("node before MatMul: %v", g.Node[i-1])
				}
				// value_info for h and the graph output stay valid as they were.
				if !proto.Equal(g.ValueInfo[0], src.Graph.ValueInfo[0]) || !proto.Equal(g.Output[0], src.Graph.Output[0]) {
					t.Fatal("value_info or outputs changed")
				}
				assertUnchangedOutside(t, src, res, ups, "mm")
			},
		},
		{
			name: "shared bias gets a private copy",
			model: func() *pb.ModelProto {
				mp := twoLayerModel(8, 13, false, onnxio.Float)()
				// Make the MatMul layer [4,4] and share C1 with it.
				mp.Graph.Initializer[2] = onnxio.NewFloatTensor("W2", onnxio.Float, []int64{4, 4}, ramp(16, 1))
				mp.Graph.Node[3].Input[1] = "C1"
				mp.Graph.Initializer = mp.Graph.Initializer[:3]
				mp.Graph.Output[0] = vi("y", onnxio.Float, -1, 4)
				return mp
			},
			opt: Options{Format: Dense}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				g := res.Graph
				_, g1 := findNode(g, "g1")
				_, add := findNode(g, "add2")
				if g1.Input[2] == "C1" || add.Input[1] == "C1" || g1.Input[2] == add.Input[1] {
					t.Fatalf("biases %s and %s: each layer needs its own copy", g1.Input[2], add.Input[1])
				}
				if findInit(g, "C1") != nil {
					t.Fatal("the shared bias is orphaned but still there")
				}
				if len(g.Initializer) != 4 {
					t.Fatalf("%d initializers, want W1, W2 and two biases", len(g.Initializer))
				}
			},
		},
		{
			name: "opset 9 style, initializers as inputs", model: twoLayerModel(4, 9, true, onnxio.Float), opt: Options{Format: Auto}, frac: 0.9, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				for _, r := range rs {
					if r.Format != Dense {
						t.Fatalf("%s: %s below opset 11", r.Tensor, r.Format)
					}
				}
				if got, want := strings.Join(inputNames(res.Graph), ","), strings.Join(inputNames(src.Graph), ","); got != want {
					t.Fatalf("inputs %s, want %s", got, want)
				}
			},
		},
		{name: "constant refused below opset 11", model: twoLayerModel(7, 10, true, onnxio.Float), opt: Options{Format: Constant}, wantErr: "opset >= 11"},
		{name: "constant refused below IR 6", model: twoLayerModel(4, 9, true, onnxio.Float), opt: Options{Format: Constant}, wantErr: "IR version >= 6"},
		{name: "sparse initializer allowed at opset 10", model: twoLayerModel(7, 10, false, onnxio.Float), opt: Options{Format: SparseInitializer}},
		{name: "sparse refused below IR 6", model: twoLayerModel(5, 10, false, onnxio.Float), opt: Options{Format: SparseInitializer}, wantErr: "IR version >= 6"},
		{
			name: "auto is dense below IR 6", model: twoLayerModel(5, 11, false, onnxio.Float), opt: Options{}, frac: 0.95,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if hasFormat(rs, Constant) {
					t.Fatal("constant chosen below IR 6")
				}
			},
		},
		{
			name: "initializers as inputs, constant and new bias", full: true, frac: 0.5,
			model: func() *pb.ModelProto {
				mp := matmulModel(6, 11, true)()
				return mp
			},
			opt: Options{Format: Constant, AddBias: true},
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if got := strings.Join(inputNames(res.Graph), ","); got != "x,W_bias" {
					t.Fatalf("inputs %s, want x,W_bias (W moved to a Constant, the new bias listed)", got)
				}
			},
		},
		{
			name: "initializers as inputs, sparse initializer", frac: 0.5, model: twoLayerModel(7, 13, true, onnxio.Float), opt: Options{Format: SparseInitializer},
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if got := strings.Join(inputNames(res.Graph), ","); got != "x,C1,b2" {
					t.Fatalf("inputs %s, want x,C1,b2", got)
				}
			},
		},
		{
			name: "scalar C expanded", model: gemmModel(8, 13, true, []int64{}), opt: Options{}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				c := findInit(res.Graph, "C")
				if !slices.Equal(c.GetDims(), []int64{3}) {
					t.Fatalf("C dims %v, want [3]", c.GetDims())
				}
				for _, v := range res.Graph.Input {
					if v.GetName() == "C" && !slices.Equal(onnxio.ValueShape(v), []int64{3}) {
						t.Fatalf("graph input C declared %v, want [3]", onnxio.ValueShape(v))
					}
				}
			},
		},
		{
			name: "C of shape [1] expanded", model: gemmModel(8, 13, false, []int64{1}), opt: Options{}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if c := findInit(res.Graph, "C"); !slices.Equal(c.GetDims(), []int64{3}) {
					t.Fatalf("C dims %v, want [3]", c.GetDims())
				}
			},
		},
		{
			name: "keep bias", model: gemmModel(8, 13, false, []int64{3}), opt: Options{}, noBias: true, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if !proto.Equal(findInit(src.Graph, "C"), findInit(res.Graph, "C")) {
					t.Fatal("C changed without a bias update")
				}
			},
		},
		{
			name: "Gemm alpha, beta, transB=0", full: true,
			model: func() *pb.ModelProto {
				inits := []*pb.TensorProto{
					onnxio.NewFloatTensor("W", onnxio.Float, []int64{4, 3}, ramp(12, 1)),
					onnxio.NewFloatTensor("C", onnxio.Float, []int64{1, 3}, ramp(3, 1)),
				}
				return smallModel(8, 13, onnxio.Float, 4, 3, []*pb.NodeProto{
					node("gemm", "Gemm", []string{"x", "W", "C"}, "y", attrF("alpha", 2), attrF("beta", 0.5)),
				}, inits, false)
			},
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				if c := findInit(res.Graph, "C"); !slices.Equal(c.GetDims(), []int64{1, 3}) {
					t.Fatalf("C dims %v, want [1,3] kept", c.GetDims())
				}
				assertUnchangedOutside(t, src, res, ups)
			},
		},
		{
			name: "Transpose+MatMul keeps the Transpose", full: true, opt: Options{Format: Constant},
			model: transposeModel,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				g := res.Graph
				if i, _ := findNode(g, "tr"); i != 1 || g.Node[0].GetOpType() != "Constant" {
					t.Fatalf("nodes %v: want Constant, Transpose, MatMul, Add", g.Node)
				}
				if d := g.Node[0].Attribute[0].GetSparseTensor().GetDims(); !slices.Equal(d, []int64{3, 4}) {
					t.Fatalf("stored dims %v, want [3,4] ([out,in])", d)
				}
				assertUnchangedOutside(t, src, res, ups)
			},
		},
		{
			name: "float16 raw", model: twoLayerModel(8, 13, false, onnxio.Float16), opt: Options{Format: Constant}, full: true,
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				g := res.Graph
				v := g.Node[0].Attribute[0].GetSparseTensor().GetValues()
				if v.GetDataType() != onnxio.Float16 || len(v.RawData) != 2*rs[0].NNZ {
					t.Fatalf("sparse values %s with %d bytes", onnxio.TypeName(v.GetDataType()), len(v.RawData))
				}
			},
		},
		{name: "bfloat16", model: twoLayerModel(8, 13, false, onnxio.BFloat16), opt: Options{Format: Dense}, full: true},
		{name: "double sparse", model: twoLayerModel(8, 13, false, onnxio.Double), opt: Options{Format: SparseInitializer}},
		{name: "value_info of a weight made a Constant", model: weightValueInfo, opt: Options{Format: Constant}, full: true},
		{name: "value_info of a weight made a sparse initializer", model: weightValueInfo, opt: Options{Format: SparseInitializer}},
		{name: "float typed storage stays typed", model: typedModel(onnxio.Float), opt: Options{Format: Dense}, full: true, check: checkTyped},
		{name: "float16 typed storage stays typed", model: typedModel(onnxio.Float16), opt: Options{Format: Dense}, full: true, check: checkTyped},
		{name: "double typed storage stays typed", model: typedModel(onnxio.Double), opt: Options{Format: Dense}, full: true, check: checkTyped},
		{
			name: "bias behind Identity gets a private copy", full: true, opt: Options{Format: Constant},
			model: func() *pb.ModelProto {
				mp := twoLayerModel(8, 13, false, onnxio.Float)()
				g := mp.Graph
				g.Node[3].Input[1] = "b2c"
				g.Node = append([]*pb.NodeProto{node("bc", "Identity", []string{"b2"}, "b2c")}, g.Node...)
				return mp
			},
			check: func(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
				_, add := findNode(res.Graph, "add2")
				if add.Input[1] != "b2_ecprune" || !proto.Equal(findInit(res.Graph, "b2"), findInit(src.Graph, "b2")) {
					t.Fatalf("Add reads %s; b2 must stay as it was for the Identity", add.Input[1])
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeProto(t, tc.model(), dir, "in.onnx")
			src, net := load(t, path)
			if !net.Evaluable {
				t.Fatalf("test model not evaluable: %s", net.Reason)
			}
			if tc.forceAll {
				// Extract already refuses the layers; export must refuse
				// them too if a caller insists.
				for _, l := range net.Layers {
					if l.Prunable || !strings.Contains(l.Reason, "shared") {
						t.Fatalf("layer %s: prunable=%v reason %q, want not prunable (shared)", l.Name, l.Prunable, l.Reason)
					}
					l.Prunable = true
				}
			}
			frac := tc.frac
			if frac == 0 {
				frac = 0.5
			}
			ups := pruneUpdates(net, frac, !tc.noBias)
			if tc.noBias {
				for i := range ups {
					ups[i].B = nil
				}
			}
			if len(ups) == 0 {
				t.Fatal("no prunable layer")
			}
			res, rs, err := Apply(src, ups, tc.opt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.onnx")
			if err := Save(res, out, 0); err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, out, ups)
			assertLayout(t, res.Proto, rs)
			for _, x := range res.Proto.Graph.Initializer {
				assertNoNegativeZero(t, x)
			}
			assertNamesUnique(t, res.Proto.Graph)
			if tc.check != nil {
				tc.check(t, src.Proto, res.Proto, rs, ups)
			}
			checker.Check(t, out, tc.full && !hasFormat(rs, SparseInitializer))
		})
	}
}

// transposeModel: x -> MatMul(Transpose(W [3,4])) -> Add(b) -> y.
func transposeModel() *pb.ModelProto {
	inits := []*pb.TensorProto{
		onnxio.NewFloatTensor("W", onnxio.Float, []int64{3, 4}, ramp(12, 1)),
		onnxio.NewFloatTensor("b", onnxio.Float, []int64{3}, ramp(3, 1)),
	}
	return smallModel(8, 13, onnxio.Float, 4, 3, []*pb.NodeProto{
		node("tr", "Transpose", []string{"W"}, "Wt"),
		node("mm", "MatMul", []string{"x", "Wt"}, "h"),
		node("add", "Add", []string{"h", "b"}, "y"),
	}, inits, false)
}

// weightValueInfo is twoLayerModel with value_info entries declaring the
// weights, which must stay valid when the weights leave the initializers.
func weightValueInfo() *pb.ModelProto {
	mp := twoLayerModel(8, 13, false, onnxio.Float)()
	mp.Graph.ValueInfo = []*pb.ValueInfoProto{vi("W1", onnxio.Float, 4, 4), vi("W2", onnxio.Float, 4, 3)}
	return mp
}

// typedModel is twoLayerModel with every initializer in the typed field
// of its element type (float_data, int32_data, double_data) and a doc
// string, as some older exporters write them.
func typedModel(dt int32) func() *pb.ModelProto {
	return func() *pb.ModelProto {
		mp := twoLayerModel(8, 13, false, dt)()
		for i, x := range mp.Graph.Initializer {
			v, err := onnxio.DecodeFloats(x)
			if err != nil {
				panic(err)
			}
			like := &pb.TensorProto{Name: x.Name, DataType: x.DataType, FloatData: []float32{}}
			y := onnxio.EncodeFloats(like, x.Dims, v)
			if y.RawData != nil {
				panic("EncodeFloats wrote raw_data for a typed tensor")
			}
			y.DocString = proto.String("doc " + x.GetName())
			mp.Graph.Initializer[i] = y
		}
		return mp
	}
}

func checkTyped(t *testing.T, src, res *pb.ModelProto, rs []TensorResult, ups []Update) {
	t.Helper()
	for _, name := range []string{"W1", "C1", "W2", "b2"} {
		x := findInit(res.Graph, name)
		if x.RawData != nil || x.GetDocString() != "doc "+name || len(x.FloatData)+len(x.Int32Data)+len(x.DoubleData) == 0 {
			t.Fatalf("%s: storage or doc string changed: %v", name, x)
		}
	}
}

// assertNamesUnique: every value has one producer (initializer, sparse
// initializer, graph input that is not an initializer, or node output).
func assertNamesUnique(t *testing.T, g *pb.GraphProto) {
	t.Helper()
	seen := map[string]string{}
	add := func(name, what string) {
		if prev, dup := seen[name]; dup {
			t.Fatalf("%q is both %s and %s", name, prev, what)
		}
		seen[name] = what
	}
	inits := map[string]bool{}
	for _, x := range g.Initializer {
		add(x.GetName(), "initializer")
		inits[x.GetName()] = true
	}
	for _, s := range g.SparseInitializer {
		add(s.GetValues().GetName(), "sparse initializer")
	}
	for _, v := range g.Input {
		if !inits[v.GetName()] {
			add(v.GetName(), "graph input")
		}
	}
	for _, n := range g.Node {
		for _, o := range n.Output {
			add(o, "output of "+n.GetName())
		}
	}
}

// TestNegativeZero writes values that are or round to -0.0 in each element
// type and checks that only +0.0 reaches the file.
func TestNegativeZero(t *testing.T) {
	for _, dt := range []int32{onnxio.Float, onnxio.Float16, onnxio.BFloat16, onnxio.Double} {
		t.Run(onnxio.TypeName(dt), func(t *testing.T) {
			src, net := load(t, writeProto(t, twoLayerModel(8, 13, false, dt)(), t.TempDir(), "in.onnx"))
			ups := pruneUpdates(net, 0, false)
			for i := range ups {
				for k := range ups[i].W {
					switch k % 3 {
					case 0:
						ups[i].W[k] = math.Copysign(0, -1)
					case 1:
						ups[i].W[k] = -1e-300 // -0 in every float type but double
					}
				}
				for o := range ups[i].B {
					ups[i].B[o] = math.Copysign(0, -1)
				}
			}
			for _, f := range []Format{Dense, Constant} {
				res, rs, err := Apply(src, ups, Options{Format: f})
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range res.Proto.Graph.Initializer {
					assertNoNegativeZero(t, x)
				}
				assertLayout(t, res.Proto, rs) // sparse values are never zero
			}
		})
	}
}

// TestAllZeroStaysDense: a sparse tensor needs at least one value.
func TestAllZeroStaysDense(t *testing.T) {
	src, net := load(t, realModel(t, "pde_mlp.onnx"))
	ups := pruneUpdates(net, 1, false)
	for _, f := range []Format{Constant, SparseInitializer, Auto} {
		res, rs, err := Apply(src, ups, Options{Format: f})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Format != Dense || r.NNZ != 0 {
				t.Fatalf("%s: all-zero weight written as %s with %d non-zeros", r.Tensor, r.Format, r.NNZ)
			}
		}
		out := filepath.Join(t.TempDir(), "zero.onnx")
		if err := Save(res, out, 0); err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, out, ups)
		checker.Check(t, out, true)
	}
}

func TestApplyErrors(t *testing.T) {
	src, net := load(t, realModel(t, "pde_mlp.onnx"))
	_, other := load(t, realModel(t, "mnist_mlp_gemm.onnx"))
	good := pruneUpdates(net, 0.5, false)
	notPrunable := *net.Layers[0]
	notPrunable.Prunable, notPrunable.Reason = false, "shared"
	shortW := good[0]
	shortW.W = shortW.W[1:]
	nanB := good[0]
	nanB.B = append([]float64{math.NaN()}, good[0].B[1:]...)
	foreign := pruneUpdates(other, 0.5, false)[1] // index 2 in the pde graph is another node
	tests := []struct {
		name string
		ups  []Update
		opt  Options
		want string
	}{
		{"unknown format", good, Options{Format: "csr"}, "unknown weight format"},
		{"bad metadata", good, Options{Metadata: "{"}, "not valid JSON"},
		{"not prunable", []Update{{Layer: &notPrunable, W: good[0].W}}, Options{}, "not prunable: shared"},
		{"twice", []Update{good[0], good[0]}, Options{}, "updated twice"},
		{"short W", []Update{shortW}, Options{}, "W has"},
		{"NaN bias", []Update{nanB}, Options{}, "B[0] is NaN"},
		{"layer of another model", []Update{foreign}, Options{}, "not from this model"},
		{"no layer", []Update{{}}, Options{}, "no layer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := proto.Clone(src.Proto)
			_, _, err := Apply(src, tc.ups, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !proto.Equal(orig, src.Proto) {
				t.Fatal("a failed Apply modified its input")
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	mp := gemmModel(8, 13, false, []int64{3})()
	mp.MetadataProps = []*pb.StringStringEntryProto{
		{Key: proto.String("author"), Value: proto.String("me")},
		{Key: proto.String(MetadataKey), Value: proto.String(`{"old":1}`)},
		{Key: proto.String(MetadataKey), Value: proto.String(`{"older":1}`)},
	}
	src, net := load(t, writeProto(t, mp, t.TempDir(), "m.onnx"))
	ups := pruneUpdates(net, 0.5, false)
	res, _, err := Apply(src, ups, Options{Metadata: `{"new":2}`})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Proto.MetadataProps
	if len(got) != 2 || got[0].GetKey() != "author" || got[1].GetKey() != MetadataKey || got[1].GetValue() != `{"new":2}` {
		t.Fatalf("metadata %v", got)
	}
	res, _, err = Apply(src, ups, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(res.Proto.MetadataProps[1], mp.MetadataProps[1]) || len(res.Proto.MetadataProps) != 3 {
		t.Fatalf("metadata changed without Options.Metadata: %v", res.Proto.MetadataProps)
	}
	mp.MetadataProps = nil
	src, net = load(t, writeProto(t, mp, t.TempDir(), "m.onnx"))
	res, _, err = Apply(src, pruneUpdates(net, 0.5, false), Options{Metadata: `{"a":1}`})
	if err != nil {
		t.Fatal(err)
	}
	if metadata(res.Proto) != `{"a":1}` || len(res.Proto.MetadataProps) != 1 {
		t.Fatalf("metadata %v", res.Proto.MetadataProps)
	}
}

// TestExternalData: tensors left untouched stay in external data, at the
// same place, and changed ones are inlined; Save never writes over the
// source or its data files.
func TestExternalData(t *testing.T) {
	srcDir := t.TempDir()
	m0, _ := load(t, realModel(t, "pde_mlp.onnx"))
	in := filepath.Join(srcDir, "pde.onnx")
	if err := m0.Save(in, onnxio.SaveOptions{ExternalThreshold: 1024, ExternalName: "weights.bin"}); err != nil {
		t.Fatal(err)
	}
	src, net := load(t, in)
	ups := pruneUpdates(net, 0.8, false)[:2] // net.0 and net.2; net.4 and net.6 untouched
	res, _, err := Apply(src, ups, Options{Format: Dense})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res.Proto.Graph.Initializer {
		external := x.GetDataLocation() == pb.TensorProto_EXTERNAL
		switch x.GetName() {
		case "net.2.weight":
			if external || x.RawData == nil {
				t.Errorf("%s: changed tensor not inlined", x.GetName())
			}
		case "net.4.weight":
			if !external || !proto.Equal(x, findInit(src.Proto.Graph, "net.4.weight")) {
				t.Errorf("%s: untouched external tensor changed", x.GetName())
			}
		}
	}
	assertUnchangedOutside(t, src.Proto, res.Proto, ups)

	outDir := t.TempDir()
	out := filepath.Join(outDir, "pruned.onnx")
	if err := Save(res, out, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outDir, "weights.bin")); err != nil {
		t.Fatalf("external data of untouched tensors not copied: %v", err)
	}
	checkRoundTrip(t, out, ups)
	checker.Check(t, out, true)
	// Repacked with a threshold next to the source: allowed, own data file.
	out2 := filepath.Join(srcDir, "pruned.onnx")
	if err := Save(res, out2, 1024); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, out2, ups)
	if _, err := os.Stat(out2 + ".data"); err != nil {
		t.Fatal(err)
	}
	if sz, err := Sizes(out2); err != nil {
		t.Fatal(err)
	} else if st1, _ := os.Stat(out2); sz.Disk != st1.Size()+fileSize(t, out2+".data") {
		t.Errorf("Sizes.Disk %d, want model + data file", sz.Disk)
	}
	// The input must still load to the original weights.
	_, again := load(t, in)
	for i, l := range again.Layers {
		for k, w := range l.Weights64() {
			if w != net.Layers[i].At(k) {
				t.Fatalf("the source model changed: %s W[%d]", l.Name, k)
			}
		}
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestSaveRefusesInput(t *testing.T) {
	srcDir := t.TempDir()
	m0, _ := load(t, realModel(t, "pde_mlp.onnx"))
	in := filepath.Join(srcDir, "pde.onnx")
	// External data named like the data file a threshold save of
	// "other.onnx" would write.
	if err := m0.Save(in, onnxio.SaveOptions{ExternalThreshold: 1024, ExternalName: "other.onnx.data"}); err != nil {
		t.Fatal(err)
	}
	src, net := load(t, in)
	some, _, err := Apply(src, pruneUpdates(net, 0.5, false)[:1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Every layer changed: the result no longer refers to the data file,
	// only the source file does.
	all, _, err := Apply(src, pruneUpdates(net, 0.5, false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link.onnx")
	if err := os.Link(in, link); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(t.TempDir(), "sym.onnx")
	if err := os.Symlink(in, sym); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		m         *onnxio.Model
		out       string
		threshold int64
		want      string
	}{
		{"same path", some, in, 0, "would overwrite the input model"},
		{"same path, other spelling", some, filepath.Join(srcDir, ".", "x", "..", "pde.onnx"), 0, "would overwrite the input model"},
		{"hard link", some, link, 0, "would overwrite the input model"},
		{"symlink", some, sym, 0, "would overwrite the input model"},
		{"data file by name", some, filepath.Join(srcDir, "other.onnx.data"), 0, "would overwrite external data file"},
		{"keeping the layout beside the source", some, filepath.Join(srcDir, "pruned.onnx"), 0, "external data threshold"},
		{"threshold data file", all, filepath.Join(srcDir, "other.onnx"), 64, "would overwrite external data file"},
		{"missing folder", some, filepath.Join(srcDir, "nope", "out.onnx"), 0, "output folder"},
		{"folder", some, srcDir, 0, "is a folder"},
		{"empty", some, "", 0, "no output path"},
	}
	before := fileSize(t, filepath.Join(srcDir, "other.onnx.data"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Save(tc.m, tc.out, tc.threshold)
			var bad *onnxio.BadInputError
			if err == nil || !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a BadInputError containing %q", err, tc.want)
			}
		})
	}
	if fileSize(t, filepath.Join(srcDir, "other.onnx.data")) != before {
		t.Fatal("the input's external data changed")
	}
	_, again := load(t, in)
	if again.Layers[0].At(0) != net.Layers[0].At(0) {
		t.Fatal("the input model changed")
	}
	// Where nothing collides, the same calls succeed.
	if err := Save(all, filepath.Join(srcDir, "pruned.onnx"), 0); err != nil {
		t.Fatalf("all tensors inlined, nothing external to copy: %v", err)
	}
	if err := Save(some, filepath.Join(srcDir, "third.onnx"), 64); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyFolder(t *testing.T) {
	src, net := load(t, realModel(t, "pde_mlp.onnx"))
	res, _, err := Apply(src, pruneUpdates(net, 0.5, false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := testmodels.UnwritableDir(t)
	var bad *onnxio.BadInputError
	if err := Save(res, filepath.Join(dir, "out.onnx"), 0); !errors.As(err, &bad) || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("error %v, want a BadInputError saying not writable", err)
	}
}

// TestSparseLowerBound: the bound Auto uses to skip building a sparse
// form is never above the real size of that form (the sparse tensor, and
// the Constant node that carries it), so the shortcut cannot change which
// format Auto picks.
func TestSparseLowerBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dt := range []int32{onnxio.Float, onnxio.Float16, onnxio.BFloat16, onnxio.Double} {
		for _, density := range []float64{0.001, 0.1, 0.5, 0.9, 1} {
			for _, n := range []int{1, 100, 40000} {
				vals := make([]float64, n)
				nnz := 0
				for k := range vals {
					if rng.Float64() < density || k == n-1 {
						vals[k] = rng.Float64() + 0.5
						nnz++
					}
				}
				like := &pb.TensorProto{Name: proto.String("w"), DataType: proto.Int32(dt), Dims: []int64{int64(n)}}
				sp := sparseTensor(like, like.Dims, vals, nnz)
				node := &pb.NodeProto{OpType: proto.String("Constant"), Output: []string{"w"}, Attribute: []*pb.AttributeProto{{
					Name: proto.String("sparse_value"), Type: pb.AttributeProto_SPARSE_TENSOR.Enum(), SparseTensor: sp}}}
				lb := sparseLowerBound(vals, nnz, dt)
				if got := int64(proto.Size(sp)); lb > got || lb > int64(proto.Size(node)) {
					t.Errorf("%s, %d values, density %v: bound %d above the sparse form's %d bytes", onnxio.TypeName(dt), n, density, lb, got)
				}
			}
		}
	}
}
