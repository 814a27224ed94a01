package onnxio

import (
	"bytes"
	"encoding/binary"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
	"github.com/ecprune/ecprune/testmodels"
)

// storage is where an extracted layer holds its weights.
type storage int

const (
	inView storage = iota // W32 aliasing the weight initializer's bytes
	own32                 // W32 in memory of its own
	own64                 // W
)

func (s storage) String() string {
	return [...]string{"a W32 view of the model's bytes", "an own W32", "W (float64)"}[s]
}

// weightInit is the initializer a layer's weight comes from.
func weightInit(t *testing.T, m *Model, l *Layer) *pb.TensorProto {
	t.Helper()
	for _, x := range m.Proto.Graph.Initializer {
		if x.GetName() == l.WeightInit {
			return x
		}
	}
	t.Fatalf("%s: layer %s: no initializer %q", m.Path, l.Name, l.WeightInit)
	return nil
}

// rawOf is the stored bytes of a layer's weight (nil for typed fields).
func rawOf(t *testing.T, m *Model, l *Layer) []byte {
	t.Helper()
	raw, err := m.RawBytes(weightInit(t, m, l))
	if err != nil {
		t.Fatalf("%s: layer %s: RawBytes: %v", m.Path, l.Name, err)
	}
	return raw
}

// wantWeights is a layer's effective [Out, In] weight computed from its
// stored initializer: transposed for the [in, out] layout, alpha applied.
func wantWeights(t *testing.T, m *Model, l *Layer) []float64 {
	t.Helper()
	stored, err := m.Floats(weightInit(t, m, l))
	if err != nil {
		t.Fatalf("%s: layer %s: Floats: %v", m.Path, l.Name, err)
	}
	if len(stored) != l.Out*l.In {
		t.Fatalf("%s: layer %s: %d stored values for %dx%d", m.Path, l.Name, len(stored), l.Out, l.In)
	}
	w := make([]float64, l.Out*l.In)
	for o := 0; o < l.Out; o++ {
		for i := 0; i < l.In; i++ {
			v := stored[o*l.In+i]
			if l.WeightLayout == LayoutInOut {
				v = stored[i*l.Out+o]
			}
			w[o*l.In+i] = l.Alpha * v
		}
	}
	return w
}

// overlaps reports whether the memory of a and b overlaps.
func overlaps(a []float32, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0 := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	b0 := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return a0 < b0+uintptr(len(b)) && b0 < a0+4*uintptr(len(a))
}

// storageOf classifies where l holds its weights (raw: the initializer's
// bytes). It fails when l holds both or neither, or a W32 that overlaps
// the bytes without being a view of all of them.
func storageOf(t *testing.T, l *Layer, raw []byte) storage {
	t.Helper()
	if (l.W == nil) == (l.W32 == nil) {
		t.Fatalf("layer %s: W has %d values, W32 %d: want exactly one of them", l.Name, len(l.W), len(l.W32))
	}
	if l.W32 == nil {
		return own64
	}
	if len(raw) > 0 && unsafe.Pointer(unsafe.SliceData(l.W32)) == unsafe.Pointer(unsafe.SliceData(raw)) {
		if 4*len(l.W32) != len(raw) {
			t.Fatalf("layer %s: view of %d values over %d bytes", l.Name, len(l.W32), len(raw))
		}
		return inView
	}
	if overlaps(l.W32, raw) {
		t.Fatalf("layer %s: W32 overlaps the model's bytes without being their view", l.Name)
	}
	return own32
}

// checkLayer checks that l holds its weights in want and that every
// accessor gives the effective weights of the initializer, bit for bit.
func checkLayer(t *testing.T, m *Model, l *Layer, want storage) {
	t.Helper()
	ctx := m.Path + ": layer " + l.Name
	if got := storageOf(t, l, rawOf(t, m, l)); got != want {
		t.Fatalf("%s (%s, type %s, alpha %v): weights in %v, want %v", ctx, l.WeightLayout, TypeName(l.WeightType), l.Alpha, got, want)
	}
	if want == inView && (l.WeightLayout != LayoutOutIn || l.Alpha != 1 || l.WeightType != Float) {
		t.Fatalf("%s: a view of a %s %s weight with alpha %v", ctx, TypeName(l.WeightType), l.WeightLayout, l.Alpha)
	}
	ref := wantWeights(t, m, l)
	n := l.Out * l.In
	if l.W32 != nil {
		if len(l.W32) != n {
			t.Fatalf("%s: W32 has %d values for %dx%d", ctx, len(l.W32), l.Out, l.In)
		}
		for q, v := range l.W32 {
			if math.Float32bits(v) != math.Float32bits(float32(ref[q])) || math.Float64bits(float64(v)) != math.Float64bits(ref[q]) {
				t.Fatalf("%s: W32[%d] = %v, want %v", ctx, q, v, ref[q])
			}
		}
	} else {
		if len(l.W) != n {
			t.Fatalf("%s: W has %d values for %dx%d", ctx, len(l.W), l.Out, l.In)
		}
		for q, v := range l.W {
			if math.Float64bits(v) != math.Float64bits(ref[q]) {
				t.Fatalf("%s: W[%d] = %v, want %v", ctx, q, v, ref[q])
			}
		}
		if l.W32 != nil {
			t.Fatalf("%s: a float64 layer has W32 too", ctx)
		}
		if w := l.Weights64(); unsafe.SliceData(w) != unsafe.SliceData(l.W) {
			t.Fatalf("%s: Weights64() of a float64 layer is not W", ctx)
		}
	}
	w64 := l.Weights64()
	if len(w64) != n {
		t.Fatalf("%s: Weights64() has %d values for %dx%d", ctx, len(w64), l.Out, l.In)
	}
	nz := 0
	for q, v := range ref {
		if math.Float64bits(l.At(q)) != math.Float64bits(v) || math.Float64bits(w64[q]) != math.Float64bits(v) {
			t.Fatalf("%s: At(%d) = %v, Weights64()[%d] = %v, want %v", ctx, q, l.At(q), q, w64[q], v)
		}
		if v != 0 {
			nz++
		}
	}
	if got := l.NonZeros(); got != nz {
		t.Fatalf("%s: NonZeros() = %d, want %d", ctx, got, nz)
	}
}

// loadBundled loads a bundled model, or (external) the model saved with
// its large tensors in external data and loaded again.
func loadBundled(name string, external bool) func(t *testing.T) *Model {
	return func(t *testing.T) *Model {
		t.Helper()
		m, err := Load(bundledPath(name))
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
		if !external {
			return m
		}
		p := filepath.Join(t.TempDir(), "ext.onnx")
		if err := m.Save(p, SaveOptions{ExternalThreshold: 1024}); err != nil {
			t.Fatalf("save %s with external data: %v", name, err)
		}
		if m, err = Load(p); err != nil {
			t.Fatalf("reload %s with external data: %v", name, err)
		}
		return m
	}
}

// loadCatalogue writes a testmodels case (changed by edits) and loads it.
func loadCatalogue(name string, edits ...func(*testmodels.Case)) func(t *testing.T) *Model {
	return func(t *testing.T) *Model {
		t.Helper()
		c, ok := testmodels.ByName(name)
		if !ok {
			t.Fatalf("testmodels has no case %q", name)
		}
		for _, e := range edits {
			e(&c)
		}
		p, err := c.Write(t.TempDir())
		if err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		m, err := Load(p)
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
		return m
	}
}

// setGemmAlpha sets alpha on every Gemm node.
func setGemmAlpha(alpha float32) func(*testmodels.Case) {
	return func(c *testmodels.Case) {
		for _, n := range c.Model.Graph.Node {
			if n.GetOpType() != "Gemm" {
				continue
			}
			set := false
			for _, a := range n.Attribute {
				if a.GetName() == "alpha" {
					a.F, set = proto.Float32(alpha), true
				}
			}
			if !set {
				n.Attribute = append(n.Attribute, &pb.AttributeProto{Name: proto.String("alpha"), Type: pb.AttributeProto_FLOAT.Enum(), F: proto.Float32(alpha)})
			}
		}
	}
}

// weightsToBFloat16 stores the FLOAT ".weight" initializers as BFLOAT16
// (the upper half of each float32).
func weightsToBFloat16(c *testmodels.Case) {
	for _, x := range c.Model.Graph.Initializer {
		if !strings.HasSuffix(x.GetName(), ".weight") || x.GetDataType() != Float {
			continue
		}
		out := make([]byte, len(x.RawData)/2)
		for i := range len(x.RawData) / 4 {
			binary.LittleEndian.PutUint16(out[2*i:], uint16(binary.LittleEndian.Uint32(x.RawData[4*i:])>>16))
		}
		x.RawData, x.DataType = out, proto.Int32(BFloat16)
	}
}

// misalignedExternal moves the ".weight" initializers to an external file
// at offsets that are 2 mod 4, where float32 values cannot be viewed.
func misalignedExternal(c *testmodels.Case) {
	file := []byte{0, 0}
	for _, x := range c.Model.Graph.Initializer {
		if !strings.HasSuffix(x.GetName(), ".weight") {
			continue
		}
		for len(file)%4 != 2 {
			file = append(file, 0)
		}
		off := len(file)
		file = append(file, x.RawData...)
		x.ExternalData = []*pb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String("w.bin")},
			{Key: proto.String("offset"), Value: proto.String(strconv.Itoa(off))},
			{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(x.RawData)))},
		}
		x.DataLocation = pb.TensorProto_EXTERNAL.Enum()
		x.RawData = nil
	}
	c.External = map[string][]byte{"w.bin": file}
}

// TestFloat32Storage: Extract keeps FLOAT, FLOAT16 and BFLOAT16 weights in
// W32 (a view of the model's bytes for [out, in] FLOAT raw or external
// data with alpha 1, aligned; an own copy otherwise) and DOUBLE weights,
// or an alpha that leaves float32, in W; the values are the effective
// weights of the initializer bit for bit, through every accessor.
func TestFloat32Storage(t *testing.T) {
	cases := []struct {
		name     string
		load     func(t *testing.T) *Model
		want     storage
		elem     int32 // every layer's weight type
		external bool  // some weights in external data
	}{
		{"mnist_gemm", loadBundled("mnist_mlp_gemm.onnx", false), inView, Float, false},
		{"mnist_gemm_external", loadBundled("mnist_mlp_gemm.onnx", true), inView, Float, true},
		{"mnist_matmul", loadBundled("mnist_mlp_matmul.onnx", false), own32, Float, false},
		{"mnist_matmul_external", loadBundled("mnist_mlp_matmul.onnx", true), own32, Float, true},
		{"gemm_relu", loadCatalogue("gemm_relu_opset13"), inView, Float, false},
		{"gemm_initializers_as_inputs", loadCatalogue("gemm_relu_opset9"), inView, Float, false},
		{"gemm_external_aligned", loadCatalogue("external_data_opset13"), inView, Float, true},
		// Each external tensor is read into its own buffer, aligned whatever
		// its offset in the file.
		{"gemm_external_misaligned", loadCatalogue("gemm_relu_opset13", misalignedExternal), inView, Float, true},
		{"gemm_typed_float_data", loadCatalogue("float_data_opset11"), own32, Float, false},
		{"gemm_transb0", loadCatalogue("gemm_transb0_opset13"), own32, Float, false},
		{"gemm_alpha2_exact", loadCatalogue("gemm_alpha_beta_opset13"), own32, Float, false},
		{"gemm_alpha0.5_exact", loadCatalogue("gemm_relu_opset13", setGemmAlpha(0.5)), own32, Float, false},
		{"gemm_alpha0.1_inexact", loadCatalogue("gemm_relu_opset13", setGemmAlpha(0.1)), own64, Float, false},
		{"matmul_add", loadCatalogue("matmul_add_opset13"), own32, Float, false},
		{"transpose_matmul", loadCatalogue("matmul_transpose_opset13"), own32, Float, false},
		{"tied_weight", loadCatalogue("tied_weight_opset13"), inView, Float, false},
		{"float16", loadCatalogue("float16_opset13"), own32, Float16, false},
		{"bfloat16", loadCatalogue("gemm_relu_opset13", weightsToBFloat16), own32, BFloat16, false},
		{"double", loadCatalogue("float64_opset13"), own64, Double, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.load(t)
			net, err := Extract(m, ExtractOptions{})
			if err != nil {
				t.Fatalf("extract %s: %v", m.Path, err)
			}
			if len(net.Layers) == 0 {
				t.Fatalf("%s: no layers", m.Path)
			}
			external := 0
			for _, l := range net.Layers {
				if l.WeightType != tc.elem {
					t.Fatalf("%s: layer %s: weight type %s, want %s", m.Path, l.Name, TypeName(l.WeightType), TypeName(tc.elem))
				}
				if weightInit(t, m, l).GetDataLocation() == pb.TensorProto_EXTERNAL {
					external++
				}
				checkLayer(t, m, l, tc.want)
			}
			if tc.external && external == 0 {
				t.Fatalf("%s: no weight in external data", m.Path)
			}
		})
	}
}

// TestFloat32TiedWeight: two layers reading one initializer view the same
// bytes; SetWeights on one leaves the other, and the bytes, as they were.
func TestFloat32TiedWeight(t *testing.T) {
	m := loadCatalogue("tied_weight_opset13")(t)
	net, err := Extract(m, ExtractOptions{})
	if err != nil {
		t.Fatalf("extract %s: %v", m.Path, err)
	}
	var tied []*Layer
	for _, l := range net.Layers {
		if l.WeightInit == "fc2.weight" {
			tied = append(tied, l)
		}
	}
	if len(tied) != 2 {
		t.Fatalf("%s: %d layers read fc2.weight, want 2", m.Path, len(tied))
	}
	a, b := tied[0], tied[1]
	raw := rawOf(t, m, a)
	before := bytes.Clone(raw)
	if storageOf(t, a, raw) != inView || storageOf(t, b, raw) != inView {
		t.Fatalf("%s: tied layers %s and %s are not both views of fc2.weight", m.Path, a.Node, b.Node)
	}
	w := b.Weights64()
	for q := range w {
		w[q] = 0
	}
	b.SetWeights(w)
	if b.NonZeros() != 0 || a.NonZeros() != a.Params() {
		t.Fatalf("%s: after zeroing %s: NonZeros %d, and %d of %d for %s", m.Path, b.Node, b.NonZeros(), a.NonZeros(), a.Params(), a.Node)
	}
	if !bytes.Equal(raw, before) {
		t.Fatalf("%s: SetWeights of %s changed fc2.weight's bytes", m.Path, b.Node)
	}
	checkLayer(t, m, a, inView)
}

// extractOf loads and extracts a model for a subtest.
func extractOf(t *testing.T, load func(t *testing.T) *Model) (*Model, *Network) {
	t.Helper()
	m := load(t)
	net, err := Extract(m, ExtractOptions{})
	if err != nil {
		t.Fatalf("extract %s: %v", m.Path, err)
	}
	if len(net.Layers) == 0 {
		t.Fatalf("%s: no layers", m.Path)
	}
	return m, net
}

// rawSnapshot copies every layer's weight bytes.
func rawSnapshot(t *testing.T, m *Model, net *Network) map[string][]byte {
	t.Helper()
	s := map[string][]byte{}
	for _, l := range net.Layers {
		s[l.WeightInit] = bytes.Clone(rawOf(t, m, l))
	}
	return s
}

// checkRawUnchanged compares the weights' bytes with a snapshot.
func checkRawUnchanged(t *testing.T, m *Model, net *Network, before map[string][]byte, after string) {
	t.Helper()
	for _, l := range net.Layers {
		if !bytes.Equal(rawOf(t, m, l), before[l.WeightInit]) {
			t.Fatalf("%s: %s changed the bytes of %s", m.Path, after, l.WeightInit)
		}
	}
}

// TestLayerWeightAccessors: At, Weights64, NonZeros and Float32 agree
// between a layer holding W32 and one holding W with the same values.
func TestLayerWeightAccessors(t *testing.T) {
	_, net := extractOf(t, loadBundled("mnist_mlp_gemm.onnx", false))
	mnist := net.Layers[0]
	if mnist.W32 == nil {
		t.Fatalf("layer %s holds no W32", mnist.Name)
	}
	negZero := math.Copysign(0, -1)
	cases := []struct {
		name    string
		out, in int
		w       []float32
	}{
		{"mnist_layer", mnist.Out, mnist.In, mnist.W32},
		{"pruned", 2, 3, []float32{0, 1.5, 0, -2, 0, 3.25}},
		{"negative_zero", 1, 4, []float32{float32(negZero), 0, 1, float32(negZero)}},
		{"all_zero", 3, 1, []float32{0, 0, 0}},
		{"tiny_and_huge", 1, 4, []float32{math.SmallestNonzeroFloat32, -math.MaxFloat32, float32(math.Inf(1)), 1e-30}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w64 := make([]float64, len(tc.w))
			nz := 0
			for q, v := range tc.w {
				w64[q] = float64(v)
				if v != 0 {
					nz++
				}
			}
			l32 := &Layer{Name: tc.name + "/32", Out: tc.out, In: tc.in, W32: append([]float32(nil), tc.w...)}
			l64 := &Layer{Name: tc.name + "/64", Out: tc.out, In: tc.in, W: append([]float64(nil), w64...)}
			if l32.Params() != len(tc.w) || l64.Params() != len(tc.w) {
				t.Fatalf("Params %d and %d, want %d", l32.Params(), l64.Params(), len(tc.w))
			}
			a, b := l32.Weights64(), l64.Weights64()
			if len(a) != len(w64) || len(b) != len(w64) {
				t.Fatalf("Weights64 lengths %d and %d, want %d", len(a), len(b), len(w64))
			}
			for q := range w64 {
				want := math.Float64bits(w64[q])
				if math.Float64bits(l32.At(q)) != want || math.Float64bits(l64.At(q)) != want ||
					math.Float64bits(a[q]) != want || math.Float64bits(b[q]) != want {
					t.Fatalf("[%d]: At %v and %v, Weights64 %v and %v, want %v", q, l32.At(q), l64.At(q), a[q], b[q], w64[q])
				}
			}
			if l32.NonZeros() != nz || l64.NonZeros() != nz {
				t.Fatalf("NonZeros %d (W32) and %d (W), want %d", l32.NonZeros(), l64.NonZeros(), nz)
			}
			if l32.W32 == nil || l64.W32 != nil {
				t.Fatalf("W32: %d values (W32 layer), %d (W layer), want %d and none", len(l32.W32), len(l64.W32), len(tc.w))
			}
			// Weights64 of a W32 layer is a copy; of a W layer, W itself.
			a[0] = 42
			if l32.W32[0] != tc.w[0] {
				t.Fatalf("writing Weights64's copy changed W32[0] to %v", l32.W32[0])
			}
			if unsafe.SliceData(b) != unsafe.SliceData(l64.W) {
				t.Fatal("Weights64 of a W layer is not W")
			}
		})
	}
}

// TestLayerSetWeights: SetWeights copies, keeps float32 storage for a
// float32 layer given float32 values, switches to W otherwise, and never
// writes the storage it replaces (the model's bytes for a view); Own64
// converts to float64; a wrong length panics.
func TestLayerSetWeights(t *testing.T) {
	gemm := loadBundled("mnist_mlp_gemm.onnx", false)
	t.Run("pruned_copy_of_view", func(t *testing.T) {
		m, net := extractOf(t, gemm)
		before := rawSnapshot(t, m, net)
		for _, l := range net.Layers {
			raw := rawOf(t, m, l)
			if storageOf(t, l, raw) != inView {
				t.Fatalf("layer %s: not a view", l.Name)
			}
			w := l.Weights64()
			nz := 0
			for q := range w {
				if q%3 == 0 || (q/l.In)%4 == 1 { // scattered weights and whole rows
					w[q] = 0
				}
				if w[q] != 0 {
					nz++
				}
			}
			l.SetWeights(w)
			if got := storageOf(t, l, raw); got != own32 {
				t.Fatalf("layer %s: after SetWeights of float32 values, weights in %v, want %v", l.Name, got, own32)
			}
			for q := range w {
				if math.Float64bits(l.At(q)) != math.Float64bits(w[q]) {
					t.Fatalf("layer %s: At(%d) = %v after SetWeights, want %v", l.Name, q, l.At(q), w[q])
				}
			}
			if l.NonZeros() != nz {
				t.Fatalf("layer %s: NonZeros %d after SetWeights, want %d", l.Name, l.NonZeros(), nz)
			}
			w[1] = 42 // SetWeights took a copy
			if l.At(1) == 42 {
				t.Fatalf("layer %s: SetWeights kept the caller's slice", l.Name)
			}
		}
		checkRawUnchanged(t, m, net, before, "SetWeights")
		fresh, err := Extract(m, ExtractOptions{})
		if err != nil {
			t.Fatalf("extract %s again: %v", m.Path, err)
		}
		for _, l := range fresh.Layers {
			checkLayer(t, m, l, inView)
		}
	})
	t.Run("non_float32_value", func(t *testing.T) {
		m, net := extractOf(t, gemm)
		before := rawSnapshot(t, m, net)
		l := net.Layers[0]
		w := l.Weights64()
		w[0] = 0.1 // float64(0.1) is not a float32 number
		if float64(float32(w[0])) == w[0] {
			t.Fatal("0.1 is float32-exact?")
		}
		l.SetWeights(w)
		if l.W == nil || l.W32 != nil {
			t.Fatalf("layer %s: after SetWeights with 0.1, W %d values and W32 %d, want W only", l.Name, len(l.W), len(l.W32))
		}
		if math.Float64bits(l.At(0)) != math.Float64bits(0.1) || l.W32 != nil {
			t.Fatalf("layer %s: At(0) = %v, W32 %d values; want 0.1 and nil", l.Name, l.At(0), len(l.W32))
		}
		for q := range w {
			if math.Float64bits(l.W[q]) != math.Float64bits(w[q]) {
				t.Fatalf("layer %s: W[%d] = %v, want %v", l.Name, q, l.W[q], w[q])
			}
		}
		checkRawUnchanged(t, m, net, before, "SetWeights with 0.1")
		// The layer now holds float64: float32 values stay float64.
		old := l.W
		kept := append([]float64(nil), old...)
		w[0] = 0.5
		l.SetWeights(w)
		if l.W == nil || l.W32 != nil || l.At(0) != 0.5 {
			t.Fatalf("layer %s: SetWeights on a float64 layer: W %d values, W32 %d, At(0) %v; want W, 0.5", l.Name, len(l.W), len(l.W32), l.At(0))
		}
		if unsafe.SliceData(l.W) == unsafe.SliceData(old) {
			t.Fatalf("layer %s: SetWeights reused the previous W", l.Name)
		}
		for q := range kept {
			if math.Float64bits(old[q]) != math.Float64bits(kept[q]) {
				t.Fatalf("layer %s: SetWeights wrote the previous W at %d", l.Name, q)
			}
		}
	})
	t.Run("double_layer", func(t *testing.T) {
		m, net := extractOf(t, loadCatalogue("float64_opset13"))
		for _, l := range net.Layers {
			checkLayer(t, m, l, own64)
			old := l.W
			kept := append([]float64(nil), old...)
			w := make([]float64, len(old))
			for q, v := range old {
				w[q] = float64(float32(v)) // float32 values: still float64 storage
			}
			w[0] = 0
			l.SetWeights(w)
			if l.W == nil || l.W32 != nil {
				t.Fatalf("layer %s: SetWeights on a DOUBLE layer: W %d values, W32 %d; want W", l.Name, len(l.W), len(l.W32))
			}
			if unsafe.SliceData(l.W) == unsafe.SliceData(old) || unsafe.SliceData(l.W) == unsafe.SliceData(w) {
				t.Fatalf("layer %s: SetWeights did not copy", l.Name)
			}
			for q := range kept {
				if math.Float64bits(old[q]) != math.Float64bits(kept[q]) {
					t.Fatalf("layer %s: SetWeights wrote the previous W at %d", l.Name, q)
				}
				if math.Float64bits(l.At(q)) != math.Float64bits(w[q]) {
					t.Fatalf("layer %s: At(%d) = %v, want %v", l.Name, q, l.At(q), w[q])
				}
			}
			l.Own64() // no-op on W
			if unsafe.SliceData(l.W) == unsafe.SliceData(old) || l.W32 != nil {
				t.Fatalf("layer %s: Own64 changed a float64 layer", l.Name)
			}
		}
	})
	t.Run("own64", func(t *testing.T) {
		m, net := extractOf(t, gemm)
		before := rawSnapshot(t, m, net)
		for _, l := range net.Layers {
			ref := l.Weights64()
			l.Own64()
			if l.W == nil || l.W32 != nil || len(l.W) != len(ref) {
				t.Fatalf("layer %s: after Own64, W %d values, W32 %d; want W of %d", l.Name, len(l.W), len(l.W32), len(ref))
			}
			for q := range ref {
				if math.Float64bits(l.W[q]) != math.Float64bits(ref[q]) {
					t.Fatalf("layer %s: Own64: W[%d] = %v, want %v", l.Name, q, l.W[q], ref[q])
				}
			}
			w := l.W
			l.Own64()
			if unsafe.SliceData(l.W) != unsafe.SliceData(w) {
				t.Fatalf("layer %s: a second Own64 replaced W", l.Name)
			}
			for q := range l.W {
				l.W[q] = -1 // the layer's own memory
			}
			if l.NonZeros() != l.Params() || l.At(0) != -1 {
				t.Fatalf("layer %s: after writing W, NonZeros %d of %d, At(0) %v", l.Name, l.NonZeros(), l.Params(), l.At(0))
			}
		}
		checkRawUnchanged(t, m, net, before, "Own64 and writing W")
	})
	t.Run("wrong_length_panics", func(t *testing.T) {
		m, net := extractOf(t, gemm)
		l := net.Layers[0]
		view := l.W32
		n := l.Out * l.In
		for _, size := range []int{0, 1, n - 1, n + 1, l.Out, l.In} {
			func() {
				defer func() {
					r := recover()
					if r == nil {
						t.Fatalf("layer %s: SetWeights of %d values for %dx%d did not panic", l.Name, size, l.Out, l.In)
					}
					if msg, _ := r.(string); !strings.Contains(msg, l.Name) {
						t.Fatalf("layer %s: SetWeights panic %v does not name the layer", l.Name, r)
					}
				}()
				var w []float64
				if size > 0 {
					w = make([]float64, size)
				}
				l.SetWeights(w)
			}()
			if l.W != nil || unsafe.SliceData(l.W32) != unsafe.SliceData(view) || len(l.W32) != len(view) {
				t.Fatalf("layer %s: a panicking SetWeights (%d values) changed the layer", l.Name, size)
			}
		}
		checkLayer(t, m, l, inView)
	})
}

// TestNetworkCloneWeights: a clone's layers hold the same kind of storage
// with the same values in memory of their own (a view becomes a copy), and
// its ops use the clone's layers.
func TestNetworkCloneWeights(t *testing.T) {
	cases := []struct {
		name string
		load func(t *testing.T) *Model
		want storage
	}{
		{"gemm_views", loadBundled("mnist_mlp_gemm.onnx", false), inView},
		{"matmul_own32", loadBundled("mnist_mlp_matmul.onnx", false), own32},
		{"double", loadCatalogue("float64_opset13"), own64},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, net := extractOf(t, tc.load)
			before := rawSnapshot(t, m, net)
			c := net.Clone()
			if len(c.Layers) != len(net.Layers) {
				t.Fatalf("clone has %d layers, want %d", len(c.Layers), len(net.Layers))
			}
			mine := map[*Layer]bool{}
			for i, l := range net.Layers {
				cl := c.Layers[i]
				mine[cl] = true
				if cl == l {
					t.Fatalf("layer %s: clone shares the *Layer", l.Name)
				}
				checkLayer(t, m, l, tc.want)
				wantClone := tc.want
				if wantClone == inView {
					wantClone = own32
				}
				checkLayer(t, m, cl, wantClone)
				if l.W32 != nil && unsafe.SliceData(cl.W32) == unsafe.SliceData(l.W32) ||
					l.W != nil && unsafe.SliceData(cl.W) == unsafe.SliceData(l.W) {
					t.Fatalf("layer %s: clone shares the weights", l.Name)
				}
				if l.B != nil && unsafe.SliceData(cl.B) == unsafe.SliceData(l.B) {
					t.Fatalf("layer %s: clone shares the bias", l.Name)
				}
				orig := l.At(0)
				if cl.W32 != nil {
					cl.W32[0] = 1234.5
				} else {
					cl.W[0] = 1234.5
				}
				if cl.At(0) != 1234.5 || l.At(0) != orig {
					t.Fatalf("layer %s: writing the clone's weight: clone At(0) %v, original %v (was %v)", l.Name, cl.At(0), l.At(0), orig)
				}
				w := cl.Weights64()
				w[1] = 0.1
				cl.SetWeights(w) // checked below: the original keeps its weights
			}
			for _, op := range c.Ops {
				if op.Layer != nil && !mine[op.Layer] {
					t.Fatalf("clone op %s uses layer %s of the original", op.Node, op.Layer.Name)
				}
			}
			checkRawUnchanged(t, m, net, before, "writing the clone")
			for _, l := range net.Layers {
				checkLayer(t, m, l, tc.want)
			}
		})
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

// TestExtractNoSharedWeights: layers never share float64 W storage with each other
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
		// Float64 weights are each layer's own (float32 ones may be a
		// read-only view of the file, which tied layers share).
		seen := map[*float64]string{}
		for _, l := range net.Layers {
			if l.W == nil {
				continue
			}
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
