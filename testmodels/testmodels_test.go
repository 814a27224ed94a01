package testmodels

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

func TestCatalogueBasics(t *testing.T) {
	cases := All()
	if len(cases) != len(catalogue) {
		t.Fatalf("All returned %d cases, catalogue has %d", len(cases), len(catalogue))
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if c.Name == "" || seen[c.Name] {
			t.Errorf("case name %q empty or duplicated", c.Name)
		}
		seen[c.Name] = true
		if got, ok := ByName(c.Name); !ok || !proto.Equal(got.Model, c.Model) {
			t.Errorf("ByName(%q) does not rebuild the same case", c.Name)
		}
	}
	if _, ok := ByName("no_such_case"); ok {
		t.Error("ByName found a case that does not exist")
	}
}

func TestDeterministic(t *testing.T) {
	a, b := All(), All()
	for i := range a {
		ba, err := proto.MarshalOptions{Deterministic: true}.Marshal(a[i].Model)
		if err != nil {
			t.Fatalf("%s: marshal: %v", a[i].Name, err)
		}
		bb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(b[i].Model)
		if !bytes.Equal(ba, bb) {
			t.Errorf("%s: two builds differ", a[i].Name)
		}
		if a[i].Model == b[i].Model {
			t.Errorf("%s: All returned a shared model; callers could corrupt later calls", a[i].Name)
		}
	}
}

// denseLayers counts Gemm/MatMul nodes whose weight is a float initializer,
// directly or through a Transpose: an independent count to hold the
// catalogue's Layers to.
func denseLayers(g *onnxpb.GraphProto) int {
	floatInit := map[string]bool{}
	for _, t := range g.Initializer {
		switch onnxpb.TensorProto_DataType(t.GetDataType()) {
		case tFloat, tFloat16, tDouble:
			// A matrix: a batched constant ([H,in,out]) is not a layer.
			floatInit[t.GetName()] = len(t.GetDims()) == 2
		}
	}
	transposed := map[string]bool{}
	n := 0
	for _, nd := range g.Node {
		switch nd.GetOpType() {
		case "Transpose":
			if floatInit[nd.Input[0]] {
				transposed[nd.Output[0]] = true
			}
		case "Gemm", "MatMul":
			if w := nd.Input[1]; floatInit[w] || transposed[w] {
				n++
			}
		}
	}
	return n
}

func TestStructure(t *testing.T) {
	for _, c := range All() {
		t.Run(c.Name, func(t *testing.T) {
			m := c.Model
			g := m.GetGraph()
			if len(m.OpsetImport) != 1 || m.OpsetImport[0].GetDomain() != "" {
				t.Fatalf("opset_import must be the default domain only, got %v", m.OpsetImport)
			}
			opset := m.OpsetImport[0].GetVersion()
			if m.GetIrVersion() != irVersion(opset) || m.GetProducerName() != "pytorch" {
				t.Errorf("ir_version %d producer %q for opset %d", m.GetIrVersion(), m.GetProducerName(), opset)
			}
			if c.Notes == "" || c.Tol <= 0 || c.Prunable > c.Layers || c.Layers < 1 {
				t.Errorf("bad metadata: notes %q tol %g layers %d prunable %d", c.Notes, c.Tol, c.Layers, c.Prunable)
			}
			if c.Unsupported != "" && c.Prunable != 0 {
				t.Errorf("unsupported case claims %d prunable layers", c.Prunable)
			}
			if got := denseLayers(g); got != c.Layers {
				t.Errorf("graph has %d dense layers, case says %d", got, c.Layers)
			}

			in := g.Input[0]
			dims := in.GetType().GetTensorType().GetShape().GetDim()
			if in.GetName() != "input" || len(dims) != len(c.InputShape)+1 || dims[0].GetDimParam() != "N" {
				t.Fatalf("graph input %q dims %v, want \"input\" [N %v]", in.GetName(), dims, c.InputShape)
			}
			for i, d := range c.InputShape {
				if dims[i+1].GetDimValue() != d {
					t.Errorf("input dim %d is %d, InputShape says %d", i+1, dims[i+1].GetDimValue(), d)
				}
			}
			if g.Output[0].GetName() != "output" {
				t.Errorf("first graph output is %q, want \"output\"", g.Output[0].GetName())
			}

			// Every value is defined once and before its use (ONNX requires
			// topological order), node names are unique as torch makes them.
			defined := map[string]bool{}
			def := func(name, what string) {
				if defined[name] {
					t.Errorf("%s %q defined twice", what, name)
				}
				defined[name] = true
			}
			graphInputs := map[string]bool{}
			for _, vi := range g.Input {
				graphInputs[vi.GetName()] = true
			}
			inits := map[string]bool{}
			for _, tp := range g.Initializer {
				def(tp.GetName(), "initializer")
				inits[tp.GetName()] = true
			}
			for _, vi := range g.Input {
				if inits[vi.GetName()] {
					continue // keep_initializers_as_inputs lists them twice by design
				}
				def(vi.GetName(), "graph input")
			}
			if opset == 9 {
				for name := range inits {
					if !graphInputs[name] {
						t.Errorf("opset-9 export must list initializer %q as a graph input", name)
					}
				}
			}
			names := map[string]bool{}
			ops := map[string]bool{}
			for _, nd := range g.Node {
				ops[nd.GetOpType()] = true
				if nd.GetName() == "" || names[nd.GetName()] {
					t.Errorf("node name %q empty or duplicated", nd.GetName())
				}
				names[nd.GetName()] = true
				for _, x := range nd.Input {
					if x != "" && !defined[x] {
						t.Errorf("node %s input %q is not produced by an earlier node, an initializer or a graph input", nd.GetName(), x)
					}
				}
				for _, o := range nd.Output {
					def(o, "node output")
				}
			}
			for _, o := range g.Output {
				if !defined[o.GetName()] {
					t.Errorf("graph output %q is never produced", o.GetName())
				}
			}
			if c.Unsupported != "" && !ops[c.Unsupported] {
				t.Errorf("Unsupported %q is not an op of the graph", c.Unsupported)
			}
		})
	}
}

// tensorValues decodes a float initializer (raw or typed, not external).
func tensorValues(tp *onnxpb.TensorProto) ([]float64, bool) {
	var out []float64
	switch onnxpb.TensorProto_DataType(tp.GetDataType()) {
	case tFloat:
		if tp.RawData == nil {
			for _, v := range tp.FloatData {
				out = append(out, float64(v))
			}
			return out, true
		}
		for i := 0; i+4 <= len(tp.RawData); i += 4 {
			out = append(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(tp.RawData[i:]))))
		}
	case tDouble:
		if tp.RawData == nil {
			return tp.DoubleData, true
		}
		for i := 0; i+8 <= len(tp.RawData); i += 8 {
			out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(tp.RawData[i:])))
		}
	case tFloat16:
		if tp.RawData == nil {
			for _, v := range tp.Int32Data {
				out = append(out, float64(f16ToF32(uint16(v))))
			}
			return out, true
		}
		for i := 0; i+2 <= len(tp.RawData); i += 2 {
			out = append(out, float64(f16ToF32(binary.LittleEndian.Uint16(tp.RawData[i:]))))
		}
	default:
		return nil, false
	}
	return out, true
}

func TestWeights(t *testing.T) {
	for _, c := range All() {
		for _, tp := range c.Model.GetGraph().GetInitializer() {
			if tp.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
				continue // checked in TestWriteReadBack
			}
			vals, ok := tensorValues(tp)
			if !ok {
				continue
			}
			n := int64(1)
			for _, d := range tp.Dims {
				n *= d
			}
			if int64(len(vals)) != n {
				t.Errorf("%s: %s holds %d values for dims %v", c.Name, tp.GetName(), len(vals), tp.Dims)
			}
			for _, v := range vals {
				if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 4 || float64(float32(v)) != v {
					t.Errorf("%s: %s has value %v (not a finite, float32-representable, O(1) weight)", c.Name, tp.GetName(), v)
					break
				}
			}
		}
	}
}

func TestInputs(t *testing.T) {
	for _, c := range All() {
		per := 1
		for _, d := range c.InputShape {
			per *= int(d)
		}
		a := c.Inputs(5, 1)
		if len(a) != 5*per {
			t.Fatalf("%s: Inputs(5) gave %d values, want %d", c.Name, len(a), 5*per)
		}
		if !slices.Equal(a, c.Inputs(5, 1)) {
			t.Errorf("%s: Inputs is not deterministic", c.Name)
		}
		if slices.Equal(a, c.Inputs(5, 2)) {
			t.Errorf("%s: Inputs ignores the seed", c.Name)
		}
		half := c.inputElem() == tFloat16
		for _, v := range a {
			if v < -2 || v > 2 || float64(float32(v)) != v || (half && float64(f16ToF32(f32ToF16(float32(v)))) != v) {
				t.Errorf("%s: input value %v out of range or not representable", c.Name, v)
				break
			}
		}
	}
	if got := (Case{}).Inputs(0, 1); got != nil {
		t.Errorf("Inputs(0) = %v", got)
	}
}

func TestFloat16(t *testing.T) {
	for h := range 1 << 16 {
		f := f16ToF32(uint16(h))
		if f != f { // NaN: any NaN pattern is fine
			if g := f32ToF16(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, g)
			}
			continue
		}
		if g := f32ToF16(f); g != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, g)
		}
	}
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},           // halfway, rounds to even (down)
		{1 + 3.0/2048, 0x3c02},           // halfway, rounds to even (up)
		{65520, 0x7c00},                  // rounds to infinity
		{float32(math.Ldexp(1, -25)), 0}, // halfway to the smallest subnormal: even is 0
		{float32(math.Ldexp(1.5, -25)), 1},
	} {
		if got := f32ToF16(tc.in); got != tc.want {
			t.Errorf("f32ToF16(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestWriteReadBack(t *testing.T) {
	sawExternal := false
	for _, c := range All() {
		dir := t.TempDir()
		path, err := c.Write(dir)
		if err != nil {
			t.Fatalf("%s: Write: %v", c.Name, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: read back: %v", c.Name, err)
		}
		if !proto.Equal(&m, c.Model) {
			t.Errorf("%s: model read back differs", c.Name)
		}
		for _, tp := range m.Graph.Initializer {
			if tp.GetDataLocation() != onnxpb.TensorProto_EXTERNAL {
				continue
			}
			sawExternal = true
			kv := map[string]string{}
			for _, e := range tp.ExternalData {
				kv[e.GetKey()] = e.GetValue()
			}
			off, err1 := strconv.Atoi(kv["offset"])
			n, err2 := strconv.Atoi(kv["length"])
			if err1 != nil || err2 != nil || off%4096 != 0 || n < 1024 || len(tp.RawData) != 0 {
				t.Errorf("%s: %s: bad external reference %v", c.Name, tp.GetName(), kv)
				continue
			}
			file, err := os.ReadFile(filepath.Join(dir, kv["location"]))
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			if !bytes.Equal(file, c.External[kv["location"]]) || off+n > len(file) {
				t.Fatalf("%s: external file differs from Case.External or is too short", c.Name)
			}
			vals, _ := tensorValues(&onnxpb.TensorProto{DataType: tp.DataType, RawData: file[off : off+n]})
			want := int64(1)
			for _, d := range tp.Dims {
				want *= d
			}
			if int64(len(vals)) != want {
				t.Errorf("%s: %s: %d external values for dims %v", c.Name, tp.GetName(), len(vals), tp.Dims)
			}
			for _, v := range vals {
				if math.IsNaN(v) || math.Abs(v) > 4 {
					t.Errorf("%s: %s: external value %v", c.Name, tp.GetName(), v)
					break
				}
			}
		}
	}
	if !sawExternal {
		t.Error("no case uses external data")
	}
	bad := Case{Name: "bad", Model: &onnxpb.ModelProto{}, External: map[string][]byte{"../x.bin": nil}}
	if _, err := bad.Write(t.TempDir()); err == nil {
		t.Error("Write accepted an external location outside the model's folder")
	}
	if _, err := (Case{Name: "nil"}).Write(t.TempDir()); err == nil {
		t.Error("Write accepted a case without a model")
	}
}

// checkerScript checks every model path given and reports the checker's
// own limits first, since onnx 1.12 knows opsets up to 17 and IR 8 only.
const checkerScript = `
import sys
import onnx
print("LIMITS", onnx.IR_VERSION, onnx.defs.onnx_opset_version(), flush=True)
for p in sys.argv[1:]:
    try:
        onnx.checker.check_model(onnx.load(p), full_check=True)
        print("OK", p, flush=True)
    except Exception as e:
        print("FAIL", p, str(e).replace("\n", " ")[:2000], flush=True)
`

// TestONNXChecker runs onnx.checker.check_model(full_check=True), which
// includes strict shape inference, on every written model. It needs
// /usr/bin/python3 with the onnx package (Debian python3-onnx): skipped
// without it, except under CI=true where that is a failure.
func TestONNXChecker(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import onnx").Run(); err != nil {
		RequireTool(t, "ONNX checker", fmt.Errorf("%s cannot import onnx: %w", python, err))
	}
	cases := All()
	paths := map[string]Case{}
	args := []string{"-c", checkerScript}
	for _, c := range cases {
		p, err := c.Write(filepath.Join(t.TempDir(), c.Name))
		if err != nil {
			t.Fatal(err)
		}
		paths[p] = c
		args = append(args, p)
	}
	out, err := exec.Command(python, args...).Output()
	if err != nil {
		t.Fatalf("checker script failed: %v\n%s", err, out)
	}
	var maxIR, maxOpset int64
	checked := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		switch {
		case f[0] == "LIMITS" && len(f) == 3:
			maxIR, _ = strconv.ParseInt(f[1], 10, 64)
			maxOpset, _ = strconv.ParseInt(f[2], 10, 64)
		case (f[0] == "OK" || f[0] == "FAIL") && len(f) >= 2:
			c := paths[f[1]]
			checked[c.Name] = true
			opset := c.Model.OpsetImport[0].GetVersion()
			if opset > maxOpset || c.Model.GetIrVersion() > maxIR {
				t.Logf("%s: opset %d / IR %d is newer than this onnx checker (opset %d, IR %d): not checked",
					c.Name, opset, c.Model.GetIrVersion(), maxOpset, maxIR)
				continue
			}
			if f[0] == "FAIL" {
				t.Errorf("%s: onnx checker: %s", c.Name, f[2])
			}
		}
	}
	for _, c := range cases {
		if !checked[c.Name] {
			t.Errorf("%s: checker gave no verdict", c.Name)
		}
	}
}

// TestWriteAll writes every case to $ECPRUNE_TESTMODELS_OUT/<name>/ so that
// the catalogue can be inspected or run by other tools (netron, ORT from
// Node or Python). It does nothing unless the variable is set.
func TestWriteAll(t *testing.T) {
	dir := os.Getenv("ECPRUNE_TESTMODELS_OUT")
	if dir == "" {
		t.Skip("set ECPRUNE_TESTMODELS_OUT to write the catalogue")
	}
	var list strings.Builder
	for _, c := range All() {
		if _, err := c.Write(filepath.Join(dir, c.Name)); err != nil {
			t.Fatal(err)
		}
		list.WriteString(c.Name + "\t" + strconv.FormatFloat(c.Tol, 'g', -1, 64) + "\t" + c.Unsupported + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "cases.tsv"), []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
