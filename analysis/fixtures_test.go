package analysis_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// fixture is a model file with inputs to run it on.
type fixture struct {
	name  string
	path  string
	shape []int // full input shape, batch first
	data  []float64
	tol   float64 // |got-want| <= tol*max(1,|want|)
	unsup string
	case_ testmodels.Case
}

const fixtureBatch = 16

// fixtures lists every testmodels builder plus the bundled real exports.
func fixtures(t *testing.T) []fixture {
	t.Helper()
	var out []fixture
	for _, c := range testmodels.All() {
		p, err := c.Write(filepath.Join(t.TempDir(), c.Name))
		if err != nil {
			t.Fatal(err)
		}
		shape := []int{fixtureBatch}
		for _, d := range c.InputShape {
			shape = append(shape, int(d))
		}
		out = append(out, fixture{name: c.Name, path: p, shape: shape, data: c.Inputs(fixtureBatch, 1), tol: c.Tol, unsup: c.Unsupported, case_: c})
	}
	for _, b := range []struct {
		name  string
		shape []int
	}{{"mnist_mlp_gemm.onnx", []int{fixtureBatch, 784}}, {"mnist_mlp_matmul.onnx", []int{fixtureBatch, 1, 784}}, {"pde_mlp.onnx", []int{fixtureBatch, 2}}, {"mnist_cnn.onnx", []int{fixtureBatch, 1, 28, 28}}} {
		n := 1
		for _, d := range b.shape {
			n *= d
		}
		data := make([]float64, n)
		for i := range data {
			data[i] = float64(float32(math.Mod(float64(i)*0.61803398875, 1)))
		}
		out = append(out, fixture{name: b.name, path: filepath.Join("..", "testdata", "models", b.name), shape: b.shape, data: data, tol: 1e-5})
	}
	return out
}

func load(t *testing.T, f fixture) *onnxio.Network {
	t.Helper()
	return loadPath(t, f.path)
}

// loadPath loads and extracts a model file, failing the test on an error.
func loadPath(t *testing.T, path string) *onnxio.Network {
	t.Helper()
	m, err := onnxio.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// TestFixturesRoundTrip: load then save without changes is proto.Equal on
// every fixture, external data and float16 included.
func TestFixturesRoundTrip(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			m, err := onnxio.Load(f.path)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "rt.onnx")
			if err := m.Save(out, onnxio.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			m2, err := onnxio.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m.Proto, m2.Proto) {
				t.Error("not proto.Equal after a round trip")
			}
		})
	}
}

// TestFixturesExtraction: layer counts, and unsupported ops named.
func TestFixturesExtraction(t *testing.T) {
	for _, f := range fixtures(t) {
		if f.case_.Model == nil {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			net := load(t, f)
			if len(net.Layers) != f.case_.Layers {
				t.Errorf("%d dense layers, want %d", len(net.Layers), f.case_.Layers)
			}
			if f.unsup != "" {
				if net.Evaluable {
					// Extraction leaves ops it has no kind for to the
					// registry, which must name them before any run.
					err := analysis.Check(net)
					if err == nil || !strings.Contains(err.Error(), f.unsup) {
						t.Fatalf("a model with %s passes the evaluator's check (%v)", f.unsup, err)
					}
					return
				}
				if !strings.Contains(net.Reason, f.unsup) && !strings.Contains(net.Reason, "quantize") {
					t.Errorf("reason %q does not name %s", net.Reason, f.unsup)
				}
				if len(net.Prunable()) != 0 {
					t.Error("layers prunable in a model that cannot be evaluated")
				}
				return
			}
			if !net.Evaluable {
				t.Fatalf("not evaluable: %s", net.Reason)
			}
			for _, l := range net.Layers {
				if !l.Prunable && !strings.Contains(l.Reason, "shared") && !strings.Contains(l.Reason, "output") {
					t.Errorf("layer %s not prunable: %s", l.Name, l.Reason)
				}
			}
		})
	}
}

// TestEvaluatorMatchesORT: the built-in evaluator equals ONNX Runtime on
// every fixture and builder.
func TestEvaluatorMatchesORT(t *testing.T) {
	ort.Require(t)
	for _, f := range fixtures(t) {
		if f.unsup != "" {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			net := load(t, f)
			tr, err := analysis.Run(net, []*analysis.Tensor{analysis.NewTensor(f.shape, append([]float64(nil), f.data...))})
			if err != nil {
				t.Fatal(err)
			}
			shape := make([]int64, len(f.shape))
			for i, d := range f.shape {
				shape[i] = int64(d)
			}
			res, err := ort.Run(f.path, map[string]ort.Tensor{net.Inputs[0].Name: {Shape: shape, Data: f.data}})
			if err != nil {
				t.Fatal(err)
			}
			got := tr.Outputs()
			if len(got)+len(net.ConstOutputs) != len(res) {
				t.Fatalf("%d outputs (+%d constant), ORT %d", len(got), len(net.ConstOutputs), len(res))
			}
			worst := 0.0
			for i, id := range net.Outputs {
				want, ok := res[net.Values[id].Name]
				if !ok || len(want.Data) != got[i].Len() {
					t.Fatalf("output %s: %d values, ORT %d", net.Values[id].Name, got[i].Len(), len(want.Data))
				}
				for k, want := range want.Data {
					e := math.Abs(got[i].Data[k]-want) / math.Max(1, math.Abs(want))
					worst = math.Max(worst, e)
				}
			}
			if worst > f.tol {
				t.Errorf("evaluator vs ORT: error %.3g > %.3g", worst, f.tol)
			}
			t.Logf("%s: evaluator vs ORT: max error %.2g (tolerance %.0g)", f.name, worst, f.tol)
		})
	}
}

// TestForwardReverseEveryFixture: the statistics from forward-mode and
// reverse-mode derivatives agree to 1e-9 on every evaluable fixture.
func TestForwardReverseEveryFixture(t *testing.T) {
	for _, f := range fixtures(t) {
		if f.unsup != "" {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			net := load(t, f)
			if len(net.Prunable()) == 0 {
				t.Skip("no prunable layer")
			}
			d := &memData{inputs: []*analysis.Tensor{analysis.NewTensor(f.shape, f.data)}}
			var s [2]*analysis.Stats
			for k, ad := range []string{analysis.ADForward, analysis.ADReverse} {
				st, err := analysis.Collect(net, d, analysis.StatsOptions{AD: ad, Batch: 7})
				if err != nil {
					t.Fatal(err)
				}
				s[k] = st
			}
			for l := range s[0].Layers {
				i0, d0 := s[0].Layers[l].ECImportance(s[0].N)
				i1, d1 := s[1].Layers[l].ECImportance(s[1].N)
				if e := scaledErr(i0, i1); e > 1e-9 {
					t.Errorf("layer %d importance: forward vs reverse %.3g", l, e)
				}
				if e := scaledErr(d0, d1); e > 1e-9 {
					t.Errorf("layer %d delta: forward vs reverse %.3g", l, e)
				}
			}
		})
	}
}

// scaledErr is max |a-b| / max |b|: relative to the layer's scale, since
// single entries near zero carry only rounding noise.
func scaledErr(a, b []float64) float64 {
	var d, m float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		m = math.Max(m, math.Abs(b[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// memData is calibration data held in memory, batched along axis 0.
type memData struct{ inputs []*analysis.Tensor }

func (m *memData) Len() int { return m.inputs[0].Shape[0] }

func (m *memData) Each(batch int, f func(analysis.Batch) error) error {
	n := m.Len()
	for s := 0; s < n; s += batch {
		e := min(n, s+batch)
		ins := make([]*analysis.Tensor, len(m.inputs))
		for i, t := range m.inputs {
			ins[i] = t.Batch(s, e)
		}
		if err := f(analysis.Batch{Start: s, Inputs: ins}); err != nil {
			return err
		}
	}
	return nil
}
