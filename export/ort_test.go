package export

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// ortInput is a deterministic batch for a model's single input, its
// dynamic dimensions set to batch.
func ortInput(shape []int64, batch int64) ort.Tensor {
	s := append([]int64(nil), shape...)
	n := int64(1)
	for i, d := range s {
		if d < 0 {
			s[i] = batch
		}
		n *= s[i]
	}
	x := ort.Tensor{Shape: s, Data: make([]float64, n)}
	for i := range x.Data {
		x.Data[i] = math.Mod(float64(i)*0.37, 1) - 0.2
	}
	return x
}

func runORT(t *testing.T, path string, x ort.Tensor) []float64 {
	t.Helper()
	outs, err := ort.RunSingle(path, x)
	if err != nil {
		t.Fatalf("ONNX Runtime on %s: %v", path, err)
	}
	var all []float64
	for _, o := range outs {
		all = append(all, o.Data...)
	}
	return all
}

func maxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestORTRunsEveryFormat runs each format's output of the bundled models
// through ONNX Runtime: all formats must compute the same thing, and
// pruning must have changed the output.
func TestORTRunsEveryFormat(t *testing.T) {
	ort.Require(t)
	for _, name := range realModels {
		t.Run(name, func(t *testing.T) {
			path := realModel(t, name)
			src, net := load(t, path)
			x := ortInput(net.Inputs[0].Shape, 5)
			y0 := runORT(t, path, x)
			ups := pruneUpdates(net, 0.8, false)
			var ref []float64
			for _, f := range []Format{Dense, Constant, SparseInitializer, Auto} {
				res, _, err := Apply(src, ups, Options{Format: f})
				if err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(t.TempDir(), string(f)+".onnx")
				if err := Save(res, out, 0); err != nil {
					t.Fatal(err)
				}
				y := runORT(t, out, x)
				if ref == nil {
					ref = y
					if d := maxDiff(y, y0); d < 1e-3 {
						t.Fatalf("pruning 80%% changed the output by only %g", d)
					}
					continue
				}
				if d := maxDiff(y, ref); d > 1e-5 {
					t.Fatalf("%s output differs from dense by %g", f, d)
				}
			}
		})
	}
}

// TestORTAddedBiases checks with ONNX Runtime that what Apply writes for
// the layouts and bias cases computes x W^T + b with the updated W and b,
// computed here independently of onnxio's evaluator.
func TestORTAddedBiases(t *testing.T) {
	ort.Require(t)
	cases := []struct {
		name  string
		model func() *pb.ModelProto
		relu  bool
	}{
		{"bias-free Gemm", gemmModel(8, 13, false, nil), false},
		{"bias-free Gemm beta 0.5", gemmModel(8, 13, false, nil, attrF("beta", 0.5)), false},
		{"scalar C", gemmModel(8, 13, false, []int64{}), false},
		{"alpha 2 beta 0.5", gemmModel(8, 13, false, []int64{3}, attrF("alpha", 2), attrF("beta", 0.5)), false},
		{"bias-free MatMul", matmulModel(8, 13, false), true},
		{"initializers as inputs", matmulModel(6, 11, true), true},
		{"Transpose+MatMul+Add", transposeModel, false},
	}
	for _, tc := range cases {
		for _, f := range []Format{Dense, Constant, SparseInitializer} {
			t.Run(fmt.Sprintf("%s/%s", tc.name, f), func(t *testing.T) {
				dir := t.TempDir()
				src, net := load(t, writeProto(t, tc.model(), dir, "in.onnx"))
				ups := pruneUpdates(net, 0.5, true)
				res, _, err := Apply(src, ups, Options{Format: f, AddBias: true})
				if err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(dir, "out.onnx")
				if err := Save(res, out, 0); err != nil {
					t.Fatal(err)
				}
				x := ortInput([]int64{-1, 4}, 3)
				got := runORT(t, out, x)
				u, l := ups[0], ups[0].Layer
				beta := l.Beta
				if l.B == nil {
					beta = 1
				}
				var want []float64
				for n := 0; n < 3; n++ {
					for o := 0; o < l.Out; o++ {
						z := expectStored(l.WeightType, 0, 1) // 0
						for j := 0; j < l.In; j++ {
							z += x.Data[n*l.In+j] * expectStored(l.WeightType, u.W[o*l.In+j], l.Alpha)
						}
						z += expectStored(l.WeightType, u.B[o], beta)
						if tc.relu {
							z = math.Max(z, 0)
						}
						want = append(want, z)
					}
				}
				if d := maxDiff(got, want); d > 1e-5 {
					t.Fatalf("ORT output %v, want %v", got, want)
				}
			})
		}
	}
}

// TestORTExternalData runs pruned models saved with an external data
// threshold, which moves large tensors (sparse initializer values
// included) into a data file.
func TestORTExternalData(t *testing.T) {
	ort.Require(t)
	src, net := load(t, realModel(t, "mnist_mlp_gemm.onnx"))
	x := ortInput(net.Inputs[0].Shape, 2)
	ups := pruneUpdates(net, 0.8, false)
	var ref []float64
	for _, f := range []Format{Dense, Constant, SparseInitializer} {
		res, _, err := Apply(src, ups, Options{Format: f})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "ext.onnx")
		if err := Save(res, out, 1024); err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, out, ups)
		saved, _ := load(t, out)
		external := 0
		for _, x := range saved.Proto.Graph.Initializer {
			if x.GetDataLocation() == pb.TensorProto_EXTERNAL {
				external++
			}
		}
		for _, s := range saved.Proto.Graph.SparseInitializer {
			if s.GetValues().GetDataLocation() == pb.TensorProto_EXTERNAL {
				external++
			}
		}
		if external == 0 && f != Constant {
			t.Fatalf("%s: nothing went to external data", f)
		}
		y := runORT(t, out, x) // ORT resolves the data file beside out
		if ref == nil {
			ref = y
		} else if d := maxDiff(y, ref); d > 1e-5 {
			t.Fatalf("%s with external data differs from dense by %g", f, d)
		}
	}
}
