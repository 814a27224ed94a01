package export

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/testmodels"
	"github.com/ecprune/ecprune/testmodels/checker"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// headModelPath is a model with attention heads: a builder fixture, a zoo
// export or the bundled ViT (skipped without ECPRUNE_SHARED).
func headModelPath(t *testing.T, name string) string {
	t.Helper()
	switch name {
	case "mnist_vit.onnx":
		d := os.Getenv("ECPRUNE_SHARED")
		if d == "" {
			t.Skip("ECPRUNE_SHARED is not set")
		}
		return filepath.Join(d, "models", name)
	case "vit_linear_op13.onnx", "vit_conv_op17.onnx":
		return filepath.Join("..", "testdata", "zoo", name)
	case "mha_post_op13.onnx":
		return filepath.Join("..", "testdata", "heads", name)
	}
	c, ok := testmodels.ByName(name)
	if !ok {
		t.Fatalf("no fixture %s", name)
	}
	p, err := c.Write(filepath.Join(t.TempDir(), c.Name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHeadCuts removes half of the heads of every attention block (and
// half of the FFN units, scope layer, unit EC with compensation) and
// checks the smaller dense file: the projections lost the heads' rows and
// the output projection their columns, it equals the original graph with
// the removed heads' outputs replaced by their means (RunEdited), ONNX
// Runtime runs it with the same outputs as ecprune's evaluation, the
// checker accepts it, and every initializer the cut does not name is
// byte-identical (replaced shape constants may go).
func TestHeadCuts(t *testing.T) {
	ortErr := ort.Init()
	if ortErr != nil && testmodels.InCI() {
		t.Fatalf("ONNX Runtime: %v", ortErr)
	}
	for _, name := range []string{"attention_vit_opset13", "split_qkv_opset13", "split_qkv_opset18", "vit_linear_op13.onnx", "vit_conv_op17.onnx", "mha_post_op13.onnx", "mnist_vit.onnx"} {
		t.Run(name, func(t *testing.T) {
			path := headModelPath(t, name)
			src, net := load(t, path)
			const n = 12
			var shape []int
			for _, d := range net.Inputs[0].Shape[1:] {
				shape = append(shape, int(d))
			}
			x := analysis.NewTensor(append([]int{n}, shape...), nil)
			for i := range x.Data {
				x.Data[i] = float64(float32(math.Mod(float64(i)*0.61803398875, 1)*2 - 0.5))
			}
			groups, _, err := analysis.RemovableGroups(net, []*analysis.Tensor{x.Batch(0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			st, err := analysis.CollectUnits(net, groups, unitData{x}, analysis.StatsOptions{Batch: 5})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := analysis.ScoreUnits(st, "ec", true, 0)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := prune.SelectUnits(net, sc, prune.UnitOptions{Sparsity: 0.5, Scope: prune.Layer, Compensate: true})
			if err != nil {
				t.Fatal(err)
			}
			var cuts []UnitCut
			edit := map[int]func(*analysis.Tensor){}
			heads := 0
			for gi, c := range plan.Cuts {
				g, consts := c.Group, sc.Groups[gi].Const
				cut := UnitCutFor(net, g, c.Keep, c.ConsumerB, nil)
				if g.Heads != nil {
					if len(cut.Heads.KeepHeads) != g.Heads.Heads/2 || len(c.Keep) != len(cut.Heads.KeepHeads)*g.Block() {
						t.Fatalf("%s: kept %d of %d heads, %d units", g.Name(), len(cut.Heads.KeepHeads), g.Heads.Heads, len(c.Keep))
					}
					heads++
				}
				cuts = append(cuts, cut)
				removed := c.Removed
				edit[g.Value] = func(v *analysis.Tensor) {
					for r := 0; r < v.Len()/g.Units; r++ {
						for _, j := range removed {
							v.Data[r*g.Units+j] = consts[j]
						}
					}
				}
			}
			if heads == 0 {
				t.Fatal("no head group")
			}
			res, err := ApplyUnits(src, cuts, Options{AddBias: true})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "heads.onnx")
			if err := Save(res, out, 0); err != nil {
				t.Fatal(err)
			}
			m2, net2 := load(t, out)
			if !net2.Evaluable {
				t.Fatalf("output not evaluable: %s", net2.Reason)
			}
			for _, c := range plan.Cuts {
				g := c.Group
				if net2.Layers[g.Consumer.Index].In != len(c.Keep) {
					t.Fatalf("%s has %d inputs after keeping %d", g.Consumer.Name, net2.Layers[g.Consumer.Index].In, len(c.Keep))
				}
				if g.Heads != nil {
					for _, l := range g.Heads.Producers {
						if got, want := net2.Layers[l.Index].Out, l.Out/g.Heads.Heads*(len(c.Keep)/g.Block()); got != want {
							t.Fatalf("projection %s has %d outputs, want %d", l.Name, got, want)
						}
					}
				}
			}
			ref, err := analysis.RunEdited(net, []*analysis.Tensor{x}, edit)
			if err != nil {
				t.Fatal(err)
			}
			got, err := analysis.Run(net2, []*analysis.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			const tol = 1e-5
			var gotAll, refAll []float64
			for k, o := range got.Outputs() {
				gotAll = append(gotAll, o.Data...)
				refAll = append(refAll, ref.Outputs()[k].Data...)
			}
			for q := range refAll {
				if d := math.Abs(gotAll[q] - refAll[q]); d > tol*math.Max(1, math.Abs(refAll[q])) {
					t.Fatalf("output %d: smaller model %v, original with the heads' means %v", q, gotAll[q], refAll[q])
				}
			}
			biases := map[string]bool{}
			for _, c := range plan.Cuts {
				if c.ConsumerB != nil {
					biases[c.Group.Consumer.BiasInit] = true
				}
			}
			ag := onnxio.NewGraph(m2.Proto.Graph)
			for _, t0 := range src.Proto.Graph.Initializer {
				t1 := ag.Initializer[t0.GetName()]
				switch {
				case t1 == nil && t0.GetDataType() != int32(pb.TensorProto_INT64):
					t.Fatalf("initializer %s vanished", t0.GetName())
				case t1 == nil || biases[t0.GetName()] || !slices.Equal(t0.GetDims(), t1.GetDims()):
				case !proto.Equal(t0, t1):
					t.Fatalf("initializer %s changed though its shape did not", t0.GetName())
				}
			}
			if ortErr == nil {
				o, err := ort.Run(out, map[string]ort.Tensor{net2.Inputs[0].Name: {Shape: toInt64(x.Shape), Data: x.Data}})
				if err != nil {
					t.Fatalf("ONNX Runtime: %v", err)
				}
				var all []float64
				for _, v := range net2.Outputs {
					all = append(all, o[net2.Values[v].Name].Data...)
				}
				for q := range all {
					if d := math.Abs(all[q] - gotAll[q]); d > tol*math.Max(1, math.Abs(gotAll[q])) {
						t.Fatalf("output %d: ONNX Runtime %v, ecprune %v", q, all[q], gotAll[q])
					}
				}
			}
			if checker.CheckErr(path, true) == nil {
				if err := checker.CheckErr(out, true); err != nil {
					t.Fatalf("checker: %v", err)
				}
			} else if err := checker.CheckErr(path, true); errors.Is(err, checker.ErrUnavailable) && testmodels.InCI() {
				t.Fatal(err)
			}
		})
	}
}
