package ort

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// modelsDir holds the bundled models, relative to this package.
const modelsDir = "../../testdata/models"

// input returns a deterministic tensor of the given shape with values in
// [0, 1), different in every element and every batch row.
func input(shape ...int64) Tensor {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = float64((i*37+11)%101) / 101
	}
	return Tensor{Shape: shape, Data: data}
}

func TestBundledModels(t *testing.T) {
	Require(t)
	tests := []struct {
		model   string
		in      []int64
		wantOut []int64
	}{
		{"mnist_mlp_gemm.onnx", []int64{1, 784}, []int64{1, 10}},
		{"mnist_mlp_gemm.onnx", []int64{5, 784}, []int64{5, 10}},
		{"mnist_mlp_matmul.onnx", []int64{1, 1, 784}, []int64{1, 1, 10}},
		{"mnist_mlp_matmul.onnx", []int64{5, 1, 784}, []int64{5, 1, 10}},
		{"pde_mlp.onnx", []int64{1, 2}, []int64{1, 1}},
		{"pde_mlp.onnx", []int64{7, 2}, []int64{7, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			outs, err := RunSingle(filepath.Join(modelsDir, tc.model), input(tc.in...))
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) != 1 {
				t.Fatalf("got %d outputs, want 1", len(outs))
			}
			out := outs[0]
			if !slices.Equal(out.Shape, tc.wantOut) {
				t.Errorf("output shape %v, want %v", out.Shape, tc.wantOut)
			}
			if out.Type != TypeFloat32 {
				t.Errorf("output type %d, want %d (float32)", out.Type, TypeFloat32)
			}
			for i, v := range out.Data {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("output[%d] = %v", i, v)
				}
			}
			// Run by name gives the same result.
			named, err := Run(filepath.Join(modelsDir, tc.model), map[string]Tensor{"input": input(tc.in...)})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(named["output"].Data, out.Data) {
				t.Errorf("Run and RunSingle disagree")
			}
		})
	}
}

// The Gemm and MatMul MNIST files hold the same weights, so they compute the
// same function; the batch rows are independent of each other.
func TestMNISTGemmMatMulAgree(t *testing.T) {
	Require(t)
	const batch = 4
	gemmIn := input(batch, 784)
	gemm, err := RunSingle(filepath.Join(modelsDir, "mnist_mlp_gemm.onnx"), gemmIn)
	if err != nil {
		t.Fatal(err)
	}
	mm, err := RunSingle(filepath.Join(modelsDir, "mnist_mlp_matmul.onnx"), Tensor{Shape: []int64{batch, 1, 784}, Data: gemmIn.Data})
	if err != nil {
		t.Fatal(err)
	}
	g, m := gemm[0].Data, mm[0].Data
	if len(g) != batch*10 || len(m) != batch*10 {
		t.Fatalf("got %d and %d values, want %d", len(g), len(m), batch*10)
	}
	// The files run different kernels (Gemm with the bias inside, MatMul
	// then Add), so they agree to float32 rounding, not bit for bit: logits
	// reach about 20 in magnitude, where one float32 step is 1.9e-6. Hence
	// 1e-6 relative to the logit (absolute below 1).
	for i := range g {
		if d, tol := math.Abs(g[i]-m[i]), 1e-6*max(1, math.Abs(g[i])); d > tol {
			t.Errorf("logit %d: gemm %v, matmul %v (|diff| %g > %g)", i, g[i], m[i], d, tol)
		}
	}
	// The rows must differ (the inputs do), else the comparison means little.
	if slices.Equal(g[:10], g[10:20]) {
		t.Errorf("rows 0 and 1 have equal logits %v", g[:10])
	}
	// Row 2 alone gives what row 2 of the batch gave.
	one, err := RunSingle(filepath.Join(modelsDir, "mnist_mlp_gemm.onnx"), Tensor{Shape: []int64{1, 784}, Data: gemmIn.Data[2*784 : 3*784]})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range one[0].Data {
		if d := math.Abs(v - g[20+i]); d > 1e-6 {
			t.Errorf("logit %d of row 2: alone %v, in batch %v", i, v, g[20+i])
		}
	}
}

// tinyModel writes a one-node model with inputs x (and y when the op takes
// two) and output z, all of element type elem and shape [N, 3], and returns
// its path.
func tinyModel(t *testing.T, op string, nIn int, inElem, outElem int32, attrs ...*onnxpb.AttributeProto) string {
	t.Helper()
	vi := func(name string, elem int32) *onnxpb.ValueInfoProto {
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
	names := []string{"x", "y"}[:nIn]
	g := &onnxpb.GraphProto{
		Name: proto.String("tiny"),
		Node: []*onnxpb.NodeProto{{
			Input: names, Output: []string{"z"}, OpType: proto.String(op), Attribute: attrs,
		}},
		Output: []*onnxpb.ValueInfoProto{vi("z", outElem)},
	}
	for _, n := range names {
		g.Input = append(g.Input, vi(n, inElem))
	}
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph:       g,
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), op+".onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func castTo(elem int32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(elem))}
}

func TestElementTypes(t *testing.T) {
	Require(t)
	half := func(v float64) float64 { return FromFloat16(ToFloat16(v)) }
	x := []float64{0.1, -2, 3, 1e-7, 65519, 7, 0.5, -0.25, 1024}
	y := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9}
	tests := []struct {
		name     string
		op       string
		nIn      int
		in, out  int32
		attrs    []*onnxpb.AttributeProto
		x        []float64
		want     func(i int) float64
		wantType int32
	}{
		{"float32 identity", "Identity", 1, TypeFloat32, TypeFloat32, nil, x,
			func(i int) float64 { return float64(float32(x[i])) }, TypeFloat32},
		{"float64 add", "Add", 2, TypeFloat64, TypeFloat64, nil, x,
			func(i int) float64 { return x[i] + y[i] }, TypeFloat64},
		{"float16 identity", "Identity", 1, TypeFloat16, TypeFloat16, nil, x,
			func(i int) float64 { return half(x[i]) }, TypeFloat16},
		{"float16 add", "Add", 2, TypeFloat16, TypeFloat16, nil, x,
			func(i int) float64 { return half(half(x[i]) + y[i]) }, TypeFloat16},
		{"float64 to float16", "Cast", 1, TypeFloat64, TypeFloat16, []*onnxpb.AttributeProto{castTo(TypeFloat16)}, x,
			func(i int) float64 { return half(x[i]) }, TypeFloat16},
		{"float16 to float64", "Cast", 1, TypeFloat16, TypeFloat64, []*onnxpb.AttributeProto{castTo(TypeFloat64)}, x,
			func(i int) float64 { return half(x[i]) }, TypeFloat64},
		{"int64 add", "Add", 2, TypeInt64, TypeInt64, nil, y,
			func(i int) float64 { return 2 * y[i] }, TypeInt64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tinyModel(t, tc.op, tc.nIn, tc.in, tc.out, tc.attrs...)
			ins := map[string]Tensor{"x": {Shape: []int64{3, 3}, Data: tc.x}}
			if tc.nIn == 2 {
				ins["y"] = Tensor{Shape: []int64{3, 3}, Data: y}
			}
			outs, err := Run(p, ins)
			if err != nil {
				t.Fatal(err)
			}
			z, ok := outs["z"]
			if !ok || len(outs) != 1 {
				t.Fatalf("outputs %v, want just z", outs)
			}
			if z.Type != tc.wantType {
				t.Errorf("type %d, want %d", z.Type, tc.wantType)
			}
			if !slices.Equal(z.Shape, []int64{3, 3}) {
				t.Errorf("shape %v, want [3 3]", z.Shape)
			}
			for i, v := range z.Data {
				if w := tc.want(i); v != w {
					t.Errorf("z[%d] = %v, want %v", i, v, w)
				}
			}
		})
	}
}

// Float16 outputs are allocated before the run (see float16OutputShapes), so
// check that their shape follows the batch size.
func TestFloat16DynamicBatch(t *testing.T) {
	Require(t)
	p := tinyModel(t, "Identity", 1, TypeFloat16, TypeFloat16)
	for _, rows := range []int64{1, 2, 5} {
		in := input(rows, 3)
		outs, err := RunSingle(p, in)
		if err != nil {
			t.Fatal(err)
		}
		if got := outs[0].Shape; !slices.Equal(got, []int64{rows, 3}) {
			t.Errorf("batch %d: shape %v", rows, got)
		}
		for i, v := range outs[0].Data {
			if w := FromFloat16(ToFloat16(in.Data[i])); v != w {
				t.Errorf("batch %d: z[%d] = %v, want %v", rows, i, v, w)
			}
		}
	}
}

func TestRunErrors(t *testing.T) {
	Require(t)
	gemm := filepath.Join(modelsDir, "mnist_mlp_gemm.onnx")
	int64Add := tinyModel(t, "Add", 2, TypeInt64, TypeInt64)
	tests := []struct {
		name    string
		model   string
		inputs  map[string]Tensor
		wantErr string
	}{
		{"unknown input", gemm, map[string]Tensor{"input": input(1, 784), "extra": input(1)}, `"extra" is not an input`},
		{"missing input", int64Add, map[string]Tensor{"x": {Shape: []int64{1, 3}, Data: []float64{1, 2, 3}}}, `"y" not given`},
		{"data length", gemm, map[string]Tensor{"input": {Shape: []int64{2, 784}, Data: make([]float64, 784)}}, "needs 1568 values"},
		{"declared dim", gemm, map[string]Tensor{"input": input(1, 783)}, "does not match declared shape"},
		{"rank", gemm, map[string]Tensor{"input": input(784)}, "has rank 1"},
		{"scalar", gemm, map[string]Tensor{"input": {Data: []float64{1}}}, "rank-0"},
		{"non-integer int64", int64Add, map[string]Tensor{
			"x": {Shape: []int64{1, 3}, Data: []float64{1, 2.5, 3}},
			"y": {Shape: []int64{1, 3}, Data: []float64{1, 2, 3}},
		}, "2.5 is not an int64"},
		{"missing model", filepath.Join(t.TempDir(), "none.onnx"), map[string]Tensor{}, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(tc.model, tc.inputs)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := RunSingle(int64Add, Tensor{Shape: []int64{1, 3}, Data: []float64{1, 2, 3}}); err == nil || !strings.Contains(err.Error(), "needs exactly 1") {
		t.Errorf("RunSingle on a two-input model: error %v", err)
	}
}

func TestToFloat16(t *testing.T) {
	tests := []struct {
		in   float64
		want uint16
	}{
		{0, 0x0000},
		{math.Copysign(0, -1), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.1, 0x2e66},
		{1.0 / 3, 0x3555},
		{65504, 0x7bff},
		{65519.99, 0x7bff},
		{65520, 0x7c00}, // halfway to 2^16 rounds to even: infinity
		{1e9, 0x7c00},
		{math.Inf(-1), 0xfc00},
		{math.NaN(), 0x7e00},
		{math.Ldexp(1, -14), 0x0400},             // smallest normal
		{math.Ldexp(1, -24), 0x0001},             // smallest subnormal
		{math.Ldexp(1, -25), 0x0000},             // tie between 0 and 2^-24: even is 0
		{math.Ldexp(1.5, -25), 0x0001},           // above the tie
		{math.Ldexp(3, -25), 0x0002},             // tie between 1 and 2 ulps: even is 2
		{math.Ldexp(1023.5, -24), 0x0400},        // tie at the top of the subnormals: carries to normal
		{1 + math.Ldexp(1, -11), 0x3c00},         // tie, even is 1
		{1 + 3*math.Ldexp(1, -11), 0x3c02},       // tie, even is 1+2^-9
		{1 + math.Ldexp(1, -11) + 1e-12, 0x3c01}, // just above the tie
		{2047.5 * math.Ldexp(1, -9), 0x4400},     // tie between 0x43ff and 4: carries into the exponent
	}
	for _, tc := range tests {
		if got := ToFloat16(tc.in); got != tc.want {
			t.Errorf("ToFloat16(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

// Every half survives FromFloat16 then ToFloat16, and every midpoint between
// two neighbouring finite halves rounds to the one with an even significand.
func TestFloat16RoundTripAndTies(t *testing.T) {
	for h := 0; h <= 0xffff; h++ {
		f := FromFloat16(uint16(h))
		got := ToFloat16(f)
		if math.IsNaN(f) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x became %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, got)
		}
	}
	for h := uint16(0); h < 0x7bff; h++ {
		lo, hi := FromFloat16(h), FromFloat16(h+1)
		mid := (lo + hi) / 2 // exact in float64
		want := h
		if h&1 == 1 {
			want = h + 1
		}
		if got := ToFloat16(mid); got != want {
			t.Fatalf("tie %v between %#04x and %#04x gave %#04x, want %#04x", mid, h, h+1, got, want)
		}
		if got := ToFloat16(-mid); got != want|0x8000 {
			t.Fatalf("tie %v gave %#04x, want %#04x", -mid, got, want|0x8000)
		}
		if got := ToFloat16(math.Nextafter(mid, hi)); got != h+1 {
			t.Fatalf("just above tie %v gave %#04x, want %#04x", mid, got, h+1)
		}
		if got := ToFloat16(math.Nextafter(mid, lo)); got != h {
			t.Fatalf("just below tie %v gave %#04x, want %#04x", mid, got, h)
		}
	}
}

func TestLibPath(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libonnxruntime.so.1")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     string
		want    string
		notHere bool
	}{
		{"env names a file", lib, lib, false},
		{"env names nothing", filepath.Join(dir, "missing.so"), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvLib, tc.env)
			got, err := LibPath()
			if tc.notHere {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("LibPath() error %v, want ErrNotFound", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("LibPath() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("default under repo root", func(t *testing.T) {
		t.Setenv(EnvLib, "")
		root, err := filepath.Abs("../..")
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(root, filepath.FromSlash(RepoLibPath))
		got, err := LibPath()
		switch {
		case err == nil && got != want:
			t.Errorf("LibPath() = %q, want %q", got, want)
		case err != nil && (!errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), want)):
			t.Errorf("LibPath() error %v, want ErrNotFound naming %q", err, want)
		}
	})
}

func TestRequirePolicy(t *testing.T) {
	notFound := fmt.Errorf("%w: $%s=%q", ErrNotFound, EnvLib, "/nowhere")
	tests := []struct {
		name     string
		ciEnv    string
		err      error
		wantSkip bool
	}{
		{"missing locally", "", notFound, true},
		{"missing, CI=false", "false", notFound, true},
		{"missing in CI", "true", notFound, false},
		{"missing, CI=1", "1", notFound, false},
		{"broken library locally", "", errors.New("initialising ONNX Runtime: bad ELF"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ciEnv)
			if got := skippable(tc.err, inCI()); got != tc.wantSkip {
				t.Errorf("skippable(%v, CI=%q) = %v, want %v", tc.err, tc.ciEnv, got, tc.wantSkip)
			}
		})
	}
}
