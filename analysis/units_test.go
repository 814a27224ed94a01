package analysis_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels"
)

// unitFixtures are the models whose unit groups the brute-force tests run
// on: the real MLPs and the fixtures with per-unit ops of every kind
// between two dense layers.
var unitFixtures = []string{
	"mnist_mlp_gemm.onnx", "mnist_mlp_matmul.onnx", "pde_mlp.onnx",
	"gemm_transb0_opset13", "gemm_alpha_beta_opset13", "gemm_no_c_opset11", "matmul_transpose_opset13", "matmul_nobias_opset13",
	"prelu_channel_opset13", "prelu_shared_opset13", "batchnorm_opset13", "gelu_erf_opset13", "elementwise_between_opset13",
	"constant_first_opset13", "dropout_opset13", "cast_opset13", "float64_opset13", "silu_opset13",
}

func unitFixture(t *testing.T, name string) (fixture, bool) {
	c, ok := testmodels.ByName(name)
	if !ok {
		for _, f := range fixtures(t) {
			if f.name == name {
				return f, true
			}
		}
		return fixture{}, false
	}
	p, err := c.Write(filepath.Join(t.TempDir(), c.Name))
	if err != nil {
		t.Fatal(err)
	}
	shape := []int{fixtureBatch}
	for _, d := range c.InputShape {
		shape = append(shape, int(d))
	}
	return fixture{name: c.Name, path: p, shape: shape, data: c.Inputs(fixtureBatch, 1), tol: c.Tol, case_: c}, true
}

func removableGroups(net *onnxio.Network) []*analysis.UnitGroup {
	var out []*analysis.UnitGroup
	for _, g := range analysis.UnitGroups(net) {
		if g.Removable() {
			out = append(out, g)
		}
	}
	return out
}

// meanSqChange is (1/N) sum_n ||y'(n) - y(n)||^2 over all outputs.
func meanSqChange(a, b []*analysis.Tensor, n int) float64 {
	var s float64
	for k := range a {
		for q, v := range a[k].Data {
			d := v - b[k].Data[q]
			s += d * d
		}
	}
	return s / float64(n)
}

// TestUnitImportanceFirstOrder checks METHOD.md's unit importance against
// the graph itself: moving unit j a fraction t of the way to its constant
// c_j (a_j + t (c_j - a_j), in the original graph) changes the outputs by
// t^2 I_j N to first order, so E(t) = (1/N) sum ||dy||^2 / t^2 tends to I_j
// with a gap shrinking like t. For ec c_j is the calibration mean, for
// ec-nocomp 0. The baselines are checked against their definitions.
func TestUnitImportanceFirstOrder(t *testing.T) {
	for _, name := range unitFixtures {
		t.Run(name, func(t *testing.T) {
			f, ok := unitFixture(t, name)
			if !ok {
				t.Fatalf("no fixture %s", name)
			}
			net := load(t, f)
			groups := removableGroups(net)
			if len(groups) == 0 {
				t.Fatalf("no removable units")
			}
			x := analysis.NewTensor(f.shape, f.data)
			data := &memData{inputs: []*analysis.Tensor{x}}
			n := f.shape[0]
			// Batches of 5 make the shift (first batch's means) differ
			// from the mean.
			st, err := analysis.CollectUnits(net, groups, data, analysis.StatsOptions{Batch: 5})
			if err != nil {
				t.Fatal(err)
			}
			if st.N != n || st.Mode != analysis.ADReverse {
				t.Fatalf("N %d mode %s", st.N, st.Mode)
			}
			tr0, err := analysis.Run(net, []*analysis.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			y0 := tr0.Outputs()
			for _, method := range []string{"ec", "ec-nocomp"} {
				sc, err := analysis.ScoreUnits(st, method, method == "ec", 0)
				if err != nil {
					t.Fatal(err)
				}
				for gi, gs := range sc.Groups {
					g := groups[gi]
					a := tr0.Values[g.Value]
					h := g.Units
					best := 0
					for j, s := range gs.Score {
						if s > gs.Score[best] {
							best = j
						}
					}
					for _, j := range []int{0, h / 2, h - 1, best} {
						var mean float64
						for r := 0; r < a.Len()/h; r++ {
							mean += a.Data[r*h+j]
						}
						mean /= float64(a.Len() / h)
						c := 0.0
						if method == "ec" {
							c = mean
							if math.Abs(gs.Const[j]-mean) > 1e-12*math.Max(1, math.Abs(mean)) {
								t.Fatalf("%s unit %d: constant %v, mean %v", g.Name(), j, gs.Const[j], mean)
							}
						}
						want := gs.Score[j]
						var gaps []float64
						for _, step := range []float64{1e-2, 1e-3} {
							tr, err := analysis.RunEdited(net, []*analysis.Tensor{x}, map[int]func(*analysis.Tensor){
								g.Value: func(v *analysis.Tensor) {
									for r := 0; r < v.Len()/h; r++ {
										v.Data[r*h+j] += step * (c - v.Data[r*h+j])
									}
								},
							})
							if err != nil {
								t.Fatal(err)
							}
							e := meanSqChange(tr.Outputs(), y0, n) / (step * step)
							gaps = append(gaps, math.Abs(e-want))
						}
						scale := math.Max(want, 1e-12)
						// First order: the gap shrinks with t (ReLU kinks
						// crossed by the small move make it jump, hence the
						// loose factor), and at t = 1e-3 it is small.
						if gaps[1] > 2e-2*scale+1e-14 || (gaps[1] > 1e-6*scale && gaps[1] > 0.5*gaps[0]+1e-14) {
							t.Errorf("%s %s unit %d: importance %.6g, brute-force gaps %.3g (t=1e-2), %.3g (t=1e-3)", method, g.Name(), j, want, gaps[0], gaps[1])
						}
					}
				}
			}
			// Baselines, from their definitions.
			for _, method := range []string{"magnitude", "wanda"} {
				sc, err := analysis.ScoreUnits(st, method, false, 0)
				if err != nil {
					t.Fatal(err)
				}
				for gi, gs := range sc.Groups {
					g := groups[gi]
					a := tr0.Values[g.Value]
					for j := 0; j < g.Units; j++ {
						var row, act float64
						for q := 0; q < g.Producer.In; q++ {
							w := g.Producer.At(j*g.Producer.In + q)
							row += w * w
						}
						for r := 0; r < a.Len()/g.Units; r++ {
							v := a.Data[r*g.Units+j]
							act += v * v
						}
						want := math.Sqrt(row)
						if method == "wanda" {
							want *= math.Sqrt(act)
						}
						if math.Abs(gs.Score[j]-want) > 1e-9*math.Max(1, want) {
							t.Fatalf("%s %s unit %d: %v, want %v", method, g.Name(), j, gs.Score[j], want)
						}
						if gs.Const[j] != 0 {
							t.Fatalf("%s without compensation has constant %v", method, gs.Const[j])
						}
					}
				}
			}
		})
	}
}

// TestUnitGroupsReasons: which layers' units are removable, and the reason
// given for the others.
func TestUnitGroupsReasons(t *testing.T) {
	cases := []struct {
		fixture   string
		removable int
		reasons   []string // substrings of the reasons of the others, in layer order
	}{
		{"mnist_mlp_gemm.onnx", 2, []string{"graph output"}},
		{"pde_mlp.onnx", 3, []string{"one output unit"}},
		{"gelu_erf_opset13", 2, []string{"graph output"}},
		{"residual_opset13", -1, []string{"residual"}},
		{"softmax_opset13", -1, []string{"mixes units"}},
		{"two_heads_opset13", -1, []string{"two dense layers"}},
		{"tied_weight_opset13", -1, []string{"tied"}},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			f, ok := unitFixture(t, c.fixture)
			if !ok {
				t.Fatalf("no fixture %s", c.fixture)
			}
			net := load(t, f)
			var reasons []string
			removable := 0
			for _, g := range analysis.UnitGroups(net) {
				if g.Removable() {
					removable++
					if g.Consumer == nil || g.Value < 0 || g.Consumer.In != g.Units {
						t.Fatalf("%s: removable without a consumer", g.Name())
					}
				} else {
					reasons = append(reasons, g.Name()+": "+g.Reason)
				}
			}
			if c.removable >= 0 && removable != c.removable {
				t.Errorf("%d removable groups, want %d (others: %v)", removable, c.removable, reasons)
			}
			all := strings.Join(reasons, "; ")
			for _, r := range c.reasons {
				if !strings.Contains(all, r) {
					t.Errorf("reasons %q do not mention %q", all, r)
				}
			}
		})
	}
}

// TestUnitPairsFirstOrder: the first-order error of removing a set R of
// units together (each moved a fraction t to its mean) is t^2 sum_{j,k in
// R} M_jk, and M's diagonal is the ec importance.
func TestUnitPairsFirstOrder(t *testing.T) {
	for _, name := range []string{"mnist_mlp_gemm.onnx", "pde_mlp.onnx", "batchnorm_opset13", "gelu_erf_opset13", "prelu_channel_opset13"} {
		t.Run(name, func(t *testing.T) {
			f, ok := unitFixture(t, name)
			if !ok {
				t.Fatalf("no fixture %s", name)
			}
			net := load(t, f)
			groups := removableGroups(net)
			x := analysis.NewTensor(f.shape, f.data)
			n := f.shape[0]
			st, err := analysis.CollectUnitPairs(net, groups, &memData{inputs: []*analysis.Tensor{x}}, analysis.StatsOptions{Batch: 5})
			if err != nil {
				t.Fatal(err)
			}
			sc, err := analysis.ScoreUnits(st, "ec", true, 0)
			if err != nil {
				t.Fatal(err)
			}
			y0, err := analysis.Run(net, []*analysis.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			for gi, gs := range st.Groups {
				g := gs.Group
				h := g.Units
				m := gs.Pairs(st.N)
				for j := 0; j < h; j++ {
					if d := math.Abs(m[j*h+j] - sc.Groups[gi].Score[j]); d > 1e-9*math.Max(1e-12, sc.Groups[gi].Score[j]) {
						t.Fatalf("%s unit %d: diagonal %v, importance %v", g.Name(), j, m[j*h+j], sc.Groups[gi].Score[j])
					}
				}
				set := []int{0, 1, h / 2, h - 1}
				var want float64
				for _, j := range set {
					for _, k := range set {
						want += m[j*h+k]
					}
				}
				const step = 1e-3
				tr, err := analysis.RunEdited(net, []*analysis.Tensor{x}, map[int]func(*analysis.Tensor){
					g.Value: func(v *analysis.Tensor) {
						for r := 0; r < v.Len()/h; r++ {
							for _, j := range set {
								v.Data[r*h+j] += step * (sc.Groups[gi].Const[j] - v.Data[r*h+j])
							}
						}
					},
				})
				if err != nil {
					t.Fatal(err)
				}
				got := meanSqChange(tr.Outputs(), y0.Outputs(), n) / (step * step)
				if math.Abs(got-want) > 2e-2*math.Max(want, 1e-12)+1e-14 {
					t.Errorf("%s units %v: sum of M %.6g, brute force %.6g", g.Name(), set, want, got)
				}
			}
		})
	}
}
