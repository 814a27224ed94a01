package export_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	onnxgo "github.com/owulveryck/onnx-go"
	"github.com/owulveryck/onnx-go/backend/x/gorgonnx"
	"gorgonia.org/tensor"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
)

// TestDenseOutputInOnnxGo reads a pruned, compensated model written in the
// dense format with an independent ONNX implementation (onnx-go's own
// protobuf decoder and its Gorgonia runtime) and checks its outputs against
// ecprune's evaluator. onnx-go cannot read sparse tensors, so this covers
// the dense format only; ONNX Runtime covers the others.
func TestDenseOutputInOnnxGo(t *testing.T) {
	m, err := onnxio.Load(filepath.Join("..", "testdata", "models", "pde_mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Prune every other weight and shift each bias, as a compensating
	// method would.
	var ups []export.Update
	for _, l := range net.Layers {
		w := append([]float64(nil), l.Weights64()...)
		for q := range w {
			if q%2 == 0 {
				w[q] = 0
			}
		}
		b := append([]float64(nil), l.B...)
		for i := range b {
			b[i] += 0.01 * float64(i%3)
		}
		ups = append(ups, export.Update{Layer: l, W: w, B: b})
	}
	pm, _, err := export.Apply(m, ups, export.Options{Format: export.Dense})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pruned.onnx")
	if err := export.Save(pm, out, 0); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	backend := gorgonnx.NewGraph()
	model := onnxgo.NewModel(backend)
	if err := model.UnmarshalBinary(raw); err != nil {
		t.Fatalf("onnx-go cannot read the dense output: %v", err)
	}
	const n = 5
	x := make([]float32, n*2)
	xf := make([]float64, n*2)
	for i := range x {
		x[i] = float32(i)/10 - 0.3
		xf[i] = float64(x[i])
	}
	if err := model.SetInput(0, tensor.New(tensor.WithShape(n, 2), tensor.WithBacking(x))); err != nil {
		t.Fatal(err)
	}
	if err := backend.Run(); err != nil {
		t.Fatalf("onnx-go run: %v", err)
	}
	outs, err := model.GetOutputTensors()
	if err != nil {
		t.Fatal(err)
	}
	got := outs[0].Data().([]float32)

	pm2, err := onnxio.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	net2, err := onnxio.Extract(pm2, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := analysis.Run(net2, []*analysis.Tensor{analysis.NewTensor([]int{n, 2}, xf)})
	if err != nil {
		t.Fatal(err)
	}
	want := tr.Outputs()[0].Data
	if len(got) != len(want) {
		t.Fatalf("onnx-go gives %d outputs, ecprune %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-5*math.Max(1, math.Abs(want[i])) {
			t.Errorf("output %d: onnx-go %g, ecprune %g", i, got[i], want[i])
		}
	}
}
