package export

import (
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/analysis"
)

// TestUnitCostsMatchGraph checks analysis.SetUnitCosts against the graph
// that the cut writes: for every removable group, removing one block (a
// hidden unit, or a head with its q/k/v rows, output-projection columns
// and its share of the attention products) saves exactly the group's Cost
// in the multiply-adds of the pruned model's dense layers and MatMuls,
// counted from its own traced run, per sample. The removals of two groups
// that share no weight add up.
func TestUnitCostsMatchGraph(t *testing.T) {
	for _, name := range []string{
		"mnist_mlp_gemm.onnx", "attention_vit_opset13", "split_qkv_opset13", "split_qkv_opset18",
		"vit_linear_op13.onnx", "vit_conv_op17.onnx", "mha_post_op13.onnx", "mnist_vit.onnx",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "testdata", "models", name)
			if name != "mnist_mlp_gemm.onnx" {
				path = headModelPath(t, name)
			}
			src, net := load(t, path)
			const n = 3
			var shape []int
			for _, d := range net.Inputs[0].Shape[1:] {
				shape = append(shape, int(d))
			}
			x := analysis.NewTensor(append([]int{n}, shape...), nil)
			for i := range x.Data {
				x.Data[i] = float64(i%7) * 0.1
			}
			probe := []*analysis.Tensor{x}
			groups, _, err := analysis.RemovableGroups(net, probe)
			if err != nil {
				t.Fatal(err)
			}
			if len(groups) == 0 {
				t.Fatal("no removable group")
			}
			if err := analysis.SetUnitCosts(net, groups, probe); err != nil {
				t.Fatal(err)
			}
			tr, err := analysis.Run(net, probe)
			if err != nil {
				t.Fatal(err)
			}
			dense := analysis.MatMulMACs(net, tr)
			// saved is what cutting block b of each listed group saves,
			// per sample, counted on the pruned graph.
			saved := func(gs []*analysis.UnitGroup, b int) float64 {
				t.Helper()
				var cuts []UnitCut
				for _, g := range gs {
					var keep []int
					for j := 0; j < g.Units; j++ {
						if g.BlockOf(j) != b {
							keep = append(keep, j)
						}
					}
					cuts = append(cuts, UnitCutFor(net, g, keep, nil, nil))
				}
				res, err := ApplyUnits(src, cuts, Options{})
				if err != nil {
					t.Fatal(err)
				}
				out := filepath.Join(t.TempDir(), "cut.onnx")
				if err := Save(res, out, 0); err != nil {
					t.Fatal(err)
				}
				_, net2 := load(t, out)
				tr2, err := analysis.Run(net2, probe)
				if err != nil {
					t.Fatal(err)
				}
				return float64(dense-analysis.MatMulMACs(net2, tr2)) / n
			}
			heads := false
			for _, g := range groups {
				heads = heads || g.Heads != nil
				t.Logf("%s: %d blocks of %d units, %g multiply-adds a sample each", g.Name(), g.Blocks(), g.Block(), g.Cost)
				for _, b := range []int{0, g.Blocks() - 1} {
					if got := saved([]*analysis.UnitGroup{g}, b); got != g.Cost {
						t.Errorf("%s block %d: the pruned graph saves %g multiply-adds a sample, Cost says %g", g.Name(), b, got, g.Cost)
					}
				}
			}
			if name != "mnist_mlp_gemm.onnx" && !heads {
				t.Fatal("no head group")
			}
			// Two groups sharing no layer: their savings add up.
			for i := range groups {
				for k := i + 1; k < len(groups); k++ {
					a, c := groups[i], groups[k]
					if a.Consumer == c.Producer || c.Consumer == a.Producer {
						continue
					}
					if got := saved([]*analysis.UnitGroup{a, c}, 0); got != a.Cost+c.Cost {
						t.Errorf("%s and %s: the pruned graph saves %g, the costs add to %g", a.Name(), c.Name(), got, a.Cost+c.Cost)
					}
					return
				}
			}
		})
	}
}
