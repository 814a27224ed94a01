package analysis_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// headModel is a model with attention heads: a builder fixture, a zoo
// export, or the bundled ViT (when ECPRUNE_SHARED points at the shared
// directory).
func headModel(t *testing.T, name string) (*onnxio.Network, []int) {
	t.Helper()
	var path string
	switch {
	case strings.HasSuffix(name, ".onnx") && strings.HasPrefix(name, "mnist"):
		d := os.Getenv("ECPRUNE_SHARED")
		if d == "" {
			t.Skip("ECPRUNE_SHARED is not set")
		}
		path = filepath.Join(d, "models", name)
	case strings.HasPrefix(name, "mha_"):
		path = filepath.Join("..", "testdata", "heads", name)
	case strings.HasSuffix(name, ".onnx"):
		path = filepath.Join("..", "testdata", "zoo", name)
	default:
		f, ok := unitFixture(t, name)
		if !ok {
			t.Fatalf("no fixture %s", name)
		}
		path = f.path
	}
	net := loadPath(t, path)
	var shape []int
	for _, d := range net.Inputs[0].Shape[1:] {
		shape = append(shape, int(d))
	}
	return net, shape
}

// headInputs are n deterministic samples in [-0.5, 1.5).
func headInputs(n int, shape []int) *analysis.Tensor {
	x := analysis.NewTensor(append([]int{n}, shape...), nil)
	for i := range x.Data {
		x.Data[i] = float64(float32(math.Mod(float64(i)*0.61803398875, 1)*2 - 0.5))
	}
	return x
}

// TestHeadGroups: the attention blocks found, their head count, how the
// heads sit in the output projection's input, and which shape constants
// carry the head count; the blocks that cannot lose heads say why.
func TestHeadGroups(t *testing.T) {
	cases := []struct {
		model         string
		groups, heads int
		stride        int
		sites         int    // shape sites per group
		reason        string // for a block whose heads are not removable
	}{
		{"attention_vit_opset13", 1, 2, 4, 2, ""},
		{"split_qkv_opset13", 1, 2, 3, 3, ""}, // the two Concat pieces and the Split sizes
		{"split_qkv_opset18", 1, 2, 3, 2, ""}, // Split by num_outputs follows by itself
		{"split_qkv_opset11", 1, 0, 0, 0, "sizes in an attribute"},
		{"vit_linear_op13.onnx", 2, 4, 8, 2, ""},
		{"vit_conv_op17.onnx", 2, 4, 8, 2, ""},
		{"transformer_post_op13.onnx", 2, 0, 0, 0, "cannot be rewritten"}, // layers share weights
		{"mha_post_op13.onnx", 2, 4, 4, 4, ""},                            // nn.MultiheadAttention: q, k, v each reshaped to [T, N*H, D], merged to [T*N, C]
		{"mnist_vit.onnx", 2, 4, 16, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.model, func(t *testing.T) {
			net, _ := headModel(t, c.model)
			gs, err := analysis.HeadGroups(net, analysis.ProbeInputs(net))
			if err != nil {
				t.Fatal(err)
			}
			if len(gs) != c.groups {
				t.Fatalf("%d head groups, want %d", len(gs), c.groups)
			}
			for _, g := range gs {
				if c.reason != "" {
					if g.Removable() || !strings.Contains(g.Reason, c.reason) {
						t.Fatalf("%s: removable %v, reason %q, want %q", g.Name(), g.Removable(), g.Reason, c.reason)
					}
					continue
				}
				if !g.Removable() {
					t.Fatalf("%s: %s", g.Name(), g.Reason)
				}
				h := g.Heads
				if h.Heads != c.heads || h.ValueStride != c.stride || len(h.Sites) != c.sites || g.Units != g.Consumer.In || g.Block()*h.Heads != g.Units {
					t.Fatalf("%s: %d heads, value stride %d, %d sites %+v; want %d, %d, %d", g.Name(), h.Heads, h.ValueStride, len(h.Sites), h.Sites, c.heads, c.stride, c.sites)
				}
				seen := map[int]bool{}
				for b := 0; b < h.Heads; b++ {
					for _, j := range g.BlockUnits(b) {
						if seen[j] || g.BlockOf(j) != b {
							t.Fatalf("unit %d in two heads", j)
						}
						seen[j] = true
					}
				}
				if len(seen) != g.Units {
					t.Fatalf("heads cover %d of %d units", len(seen), g.Units)
				}
			}
		})
	}
}

// TestHeadImportanceFirstOrder checks a head's EC importance against the
// graph itself: moving the head's units (its share of the output
// projection's input) a fraction t of the way to their calibration means
// changes the outputs by t^2 I_h N to first order, the importance being
// the head's block of the pair matrix. Removing the head outright (t = 1,
// the removal with compensation) is logged next to it: the first-order
// prediction against the real change.
func TestHeadImportanceFirstOrder(t *testing.T) {
	for _, name := range []string{"attention_vit_opset13", "split_qkv_opset13", "vit_linear_op13.onnx", "mha_post_op13.onnx", "mnist_vit.onnx"} {
		t.Run(name, func(t *testing.T) {
			net, shape := headModel(t, name)
			n := 12
			x := headInputs(n, shape)
			groups, _, err := analysis.RemovableGroups(net, []*analysis.Tensor{x.Batch(0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			var heads []*analysis.UnitGroup
			for _, g := range groups {
				if g.Heads != nil {
					heads = append(heads, g)
				}
			}
			if len(heads) == 0 {
				t.Fatal("no removable heads")
			}
			st, err := analysis.CollectUnits(net, heads, &memData{inputs: []*analysis.Tensor{x}}, analysis.StatsOptions{Batch: 5})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := analysis.ScoreUnits(st, "ec", true, 0)
			if err != nil {
				t.Fatal(err)
			}
			tr0, err := analysis.Run(net, []*analysis.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			y0 := tr0.Outputs()
			for gi, gs := range sc.Groups {
				g := heads[gi]
				if len(gs.Block) != g.Heads.Heads {
					t.Fatalf("%d head scores for %d heads", len(gs.Block), g.Heads.Heads)
				}
				h := g.Units
				for b := 0; b < g.Heads.Heads; b++ {
					units := g.BlockUnits(b)
					move := func(step float64) float64 {
						tr, err := analysis.RunEdited(net, []*analysis.Tensor{x}, map[int]func(*analysis.Tensor){
							g.Value: func(v *analysis.Tensor) {
								for r := 0; r < v.Len()/h; r++ {
									for _, j := range units {
										v.Data[r*h+j] += step * (gs.Const[j] - v.Data[r*h+j])
									}
								}
							},
						})
						if err != nil {
							t.Fatal(err)
						}
						return meanSqChange(tr.Outputs(), y0, n)
					}
					want := gs.Block[b]
					const step = 1e-3
					got := move(step) / (step * step)
					if math.Abs(got-want) > 2e-2*math.Max(want, 1e-12)+1e-14 {
						t.Errorf("%s head %d: importance %.6g, brute force %.6g", g.Name(), b, want, got)
					}
					t.Logf("%s head %d: importance %.4g, first-order brute force %.4g, removed with compensation %.4g", g.Name(), b, want, got, move(1))
				}
			}
		})
	}
}

// TestTokenUnitImportanceFirstOrder: FFN units of transformer blocks have
// a row per token; a removed unit moves at every token of a sample, and
// the importance counts the cross-token terms (per-sample derivative
// sums), so it matches the graph to first order in the first block too,
// whose tokens all reach the output through the next block's attention.
func TestTokenUnitImportanceFirstOrder(t *testing.T) {
	for _, name := range []string{"vit_linear_op13.onnx", "mnist_vit.onnx"} {
		t.Run(name, func(t *testing.T) {
			net, shape := headModel(t, name)
			n := 12
			x := headInputs(n, shape)
			groups := removableGroups(net)
			if len(groups) != 2 {
				t.Fatalf("%d FFN groups, want 2", len(groups))
			}
			st, err := analysis.CollectUnits(net, groups, &memData{inputs: []*analysis.Tensor{x}}, analysis.StatsOptions{Batch: 5})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := analysis.ScoreUnits(st, "ec", true, 0)
			if err != nil {
				t.Fatal(err)
			}
			tr0, err := analysis.Run(net, []*analysis.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			for gi, gs := range sc.Groups {
				g := groups[gi]
				h := g.Units
				for _, j := range []int{0, 5, h - 1} {
					const step = 1e-4
					tr, err := analysis.RunEdited(net, []*analysis.Tensor{x}, map[int]func(*analysis.Tensor){
						g.Value: func(v *analysis.Tensor) {
							for r := 0; r < v.Len()/h; r++ {
								v.Data[r*h+j] += step * (gs.Const[j] - v.Data[r*h+j])
							}
						}})
					if err != nil {
						t.Fatal(err)
					}
					got := meanSqChange(tr.Outputs(), tr0.Outputs(), n) / (step * step)
					if want := gs.Score[j]; math.Abs(got-want) > 1e-2*math.Max(want, 1e-12)+1e-14 {
						t.Errorf("%s unit %d: importance %.6g, brute force %.6g", g.Name(), j, want, got)
					}
				}
			}
		})
	}
}
