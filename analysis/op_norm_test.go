package analysis

import (
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

var normVectorGroups = []familyVectors{
	{prefix: "test_layer_normalization", bind: [][]int{{}, {1, 2}}},
	{prefix: "test_instancenorm", bind: [][]int{{}, {1, 2}}},
	{prefix: "test_group_normalization", bind: [][]int{{1, 2}}, optional: true},
	{prefix: "test_lpnormalization", optional: true},
}

func TestOperatorVectorsNorm(t *testing.T) { runVectorGroups(t, normVectorGroups) }

func TestNormKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	r := func(shape ...int) *Tensor { return randTensor(rng, -2, 2, shape...) }
	attrs := func(typ string, kv ...any) onnxio.Op {
		o := onnxio.Op{Type: typ, Attrs: map[string]onnxio.AttrValue{}}
		for i := 0; i < len(kv); i += 2 {
			switch v := kv[i+1].(type) {
			case int:
				o.Attrs[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsInt, Int: int64(v)}
			case float64:
				o.Attrs[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsFloat, Float: v}
			}
		}
		return o
	}
	out := func(o onnxio.Op, k int) onnxio.Op { o.OutIndex = k; return o }
	ln := attrs("LayerNormalization", "axis", -1, "epsilon", 1e-5)
	ln1 := attrs("LayerNormalization", "axis", 1)
	cases := []kernelCase{
		{Name: "LayerNorm last axis", Op: ln, Ins: []*Tensor{r(2, 3, 8), r(8), r(8)}, Diff: []int{0}},
		{Name: "LayerNorm wrt scale and bias", Op: ln, Ins: []*Tensor{r(2, 3, 8), r(8), r(8)}, Diff: []int{0, 1, 2}},
		{Name: "LayerNorm no bias", Op: ln, Ins: []*Tensor{r(4, 6), r(6)}, Diff: []int{0, 1}},
		{Name: "LayerNorm axis 1 of 3", Op: ln1, Ins: []*Tensor{r(2, 3, 4), r(3, 4), r(4)}, Diff: []int{0, 1, 2}},
		{Name: "LayerNorm broadcast scale", Op: ln1, Ins: []*Tensor{r(2, 3, 4), r(1, 4), r(3, 1)}, Diff: []int{0, 1, 2}},
		{Name: "LayerNorm Mean", Op: out(ln1, 1), Ins: []*Tensor{r(2, 3, 4), r(3, 4), r(3, 4)}, Diff: []int{0}},
		{Name: "LayerNorm InvStdDev", Op: out(ln1, 2), Ins: []*Tensor{r(2, 3, 4), r(3, 4), r(3, 4)}, Diff: []int{0}},
		{Name: "InstanceNorm", Op: attrs("InstanceNormalization", "epsilon", 1e-3), Ins: []*Tensor{r(2, 3, 4, 2), r(3), r(3)}, Diff: []int{0, 1, 2}},
		{Name: "GroupNorm per channel", Op: attrs("GroupNormalization", "num_groups", 2), Ins: []*Tensor{r(2, 4, 3), r(4), r(4)}, Diff: []int{0, 1, 2}},
		{Name: "GroupNorm per group", Op: attrs("GroupNormalization", "num_groups", 2), Ins: []*Tensor{r(2, 6, 2, 2), r(2), r(2)}, Diff: []int{0, 1, 2}},
		{Name: "LpNorm p2 last", Op: attrs("LpNormalization"), Ins: []*Tensor{r(3, 5)}, Diff: []int{0}},
		{Name: "LpNorm p1 axis 1", Op: attrs("LpNormalization", "axis", 1, "p", 1), Ins: []*Tensor{r(2, 4, 3)}, Diff: []int{0}},
		{Name: "LpNorm p2 axis 0", Op: attrs("LpNormalization", "axis", 0, "p", 2), Ins: []*Tensor{r(4, 3)}, Diff: []int{0}},
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
}

// TestLayerNormMatchesDecomposed: LayerNormalization equals the exporter's
// decomposition (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div,
// Mul, Add) built from this family's kernels and the binary op kinds.
func TestLayerNormMatchesDecomposed(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x, s, b := randTensor(rng, -3, 3, 5, 7, 16), randTensor(rng, 0.5, 1.5, 16), randTensor(rng, -1, 1, 16)
	run := func(typ string, attrs map[string]onnxio.AttrValue, in ...*Tensor) *Tensor {
		t.Helper()
		c := kernelCase{Op: onnxio.Op{Type: typ, Attrs: attrs}, Ins: in}
		y, err := kernels[typ].Forward(c.opOf(), in)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	last := map[string]onnxio.AttrValue{"axes": {Kind: onnxio.AttrIsInts, Ints: []int64{-1}}}
	bin := func(f func(a, b float64) float64, a, b *Tensor) *Tensor {
		g, err := broadcastPair(a, b)
		if err != nil {
			t.Fatal(err)
		}
		y := NewTensor(g.shape, nil)
		for k := range y.Data {
			y.Data[k] = f(a.Data[bcAt(g.ia, k)], b.Data[bcAt(g.ib, k)])
		}
		return y
	}
	mu := run("ReduceMean", last, x)
	d := bin(func(a, b float64) float64 { return a - b }, x, mu)
	v := run("ReduceMean", last, run("Pow", nil, d, NewTensor([]int{}, []float64{2})))
	sd := run("Sqrt", nil, bin(func(a, b float64) float64 { return a + b }, v, NewTensor([]int{}, []float64{1e-5})))
	want := bin(func(a, b float64) float64 { return a + b },
		bin(func(a, b float64) float64 { return a * b }, bin(func(a, b float64) float64 { return a / b }, d, sd), s), b)
	got := run("LayerNormalization", nil, x, s, b)
	checkTensor(t, "LayerNormalization", got, want.Shape, want.Data, 1e-12, 1e-12)
}
