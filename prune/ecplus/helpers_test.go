package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// memData is calibration data held in memory: one graph input [N, in].
type memData struct {
	x  []float64
	in int
}

func (d memData) Len() int { return len(d.x) / d.in }

func (d memData) Each(batch int, f func(analysis.Batch) error) error {
	for s := 0; s < d.Len(); s += batch {
		e := min(d.Len(), s+batch)
		x := append([]float64(nil), d.x[s*d.in:e*d.in]...)
		if err := f(analysis.Batch{Start: s, Inputs: []*analysis.Tensor{analysis.NewTensor([]int{e - s, d.in}, x)}}); err != nil {
			return err
		}
	}
	return nil
}

// mlp builds a dense network sizes[0] -> ... -> sizes[L] with act after
// every hidden layer and an optional head (OpSoftmax, OpLogSoftmax; -1:
// none). noBias lists layers built without a bias.
func mlp(rng *rand.Rand, sizes []int, act onnxio.OpKind, head onnxio.OpKind, noBias ...int) *onnxio.Network {
	net := &onnxio.Network{Evaluable: true, Opset: 17}
	value := func(name string) int {
		net.Values = append(net.Values, onnxio.Value{Name: name})
		return len(net.Values) - 1
	}
	x := value("x")
	net.Inputs = []onnxio.Input{{Name: "x", Value: x, Shape: []int64{-1, int64(sizes[0])}, ElemType: onnxio.Float}}
	op := func(o onnxio.Op, in int) int {
		o.In = []int{in}
		o.Node = fmt.Sprintf("%s_%d", o.Kind, len(net.Ops))
		o.Out = value(o.Node)
		net.Ops = append(net.Ops, o)
		return o.Out
	}
	for k := 0; k+1 < len(sizes); k++ {
		out, in := sizes[k+1], sizes[k]
		w := make([]float64, out*in)
		for q := range w {
			w[q] = rng.NormFloat64() * 1.5 / math.Sqrt(float64(in))
		}
		var b []float64
		if !contains(noBias, k) {
			b = make([]float64, out)
			for i := range b {
				b[i] = 0.3 * rng.NormFloat64()
			}
		}
		l := &onnxio.Layer{Index: k, Name: fmt.Sprintf("W%d", k), Out: out, In: in, W: w, B: b, Prunable: true, TransposeIdx: -1, AddIdx: -1}
		net.Layers = append(net.Layers, l)
		x = op(onnxio.Op{Kind: onnxio.OpDense, Layer: l}, x)
		if k+2 < len(sizes) {
			x = op(onnxio.Op{Kind: act}, x)
		}
	}
	if head >= 0 {
		x = op(onnxio.Op{Kind: head, Axis: -1}, x)
	}
	net.Outputs = []int{x}
	return net
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func randData(rng *rand.Rand, n, in int) memData {
	x := make([]float64, n*in)
	for q := range x {
		x[q] = rng.NormFloat64()
	}
	// A constant feature: its variance, and so its EC importance, is 0.
	for s := 0; s < n; s++ {
		x[s*in] = 0.5
	}
	return memData{x: x, in: in}
}

// withLimits sets ec+'s batch and memory thresholds for one test.
func withLimits(t *testing.T, batch, mem int, jac float64) {
	t.Helper()
	ob, om, oj, op := ecpBatch, ecpMemLimit, ecpJacLimit, ecpPerParam
	ecpBatch, ecpMemLimit, ecpJacLimit, ecpPerParam = batch, mem, jac, 0
	t.Cleanup(func() { ecpBatch, ecpMemLimit, ecpJacLimit, ecpPerParam = ob, om, oj, op })
}

func collect(t *testing.T, net *onnxio.Network, data analysis.Data, opt analysis.StatsOptions) *analysis.Stats {
	t.Helper()
	st, err := analysis.Collect(net, data, opt)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	return st
}

func ecScores(t *testing.T, st *analysis.Stats) *analysis.Scores {
	t.Helper()
	c, err := analysis.CriterionByName("ec")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := c.Score(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// setup runs ec+'s first pass over the original network.
func setup(t *testing.T, net *onnxio.Network, data analysis.Data, eo Options, task analysis.Task) *ecp {
	t.Helper()
	st := collect(t, net, data, analysis.StatsOptions{})
	e, err := newECP(net, data, st, eo, task, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.origPass(); err != nil {
		t.Fatal(err)
	}
	return e
}

// perSample is brute force: each sample's layer input a' and output z'
// in cur, the original z0, and g_i(n) = ||dy/dz_i||^2 of the original by
// central differences on the layer's bias.
type perSample struct {
	a, zc, z0, g [][]float64
}

func bruteForce(t *testing.T, net, cur *onnxio.Network, data memData, layer int) perSample {
	t.Helper()
	op := analysis.LayerOp(net, net.Layers[layer])
	l := net.Layers[layer]
	var ps perSample
	run := func(n *onnxio.Network, x []float64) *analysis.Trace {
		tr, err := analysis.Run(n, []*analysis.Tensor{analysis.NewTensor([]int{1, data.in}, x)})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	const h = 1e-5
	for s := 0; s < data.Len(); s++ {
		x := data.x[s*data.in : (s+1)*data.in]
		tc, t0 := run(cur, x), run(net, x)
		ps.a = append(ps.a, tc.Values[cur.Ops[op].In[0]].Data)
		ps.zc = append(ps.zc, tc.Values[cur.Ops[op].Out].Data)
		ps.z0 = append(ps.z0, t0.Values[net.Ops[op].Out].Data)
		g := make([]float64, l.Out)
		for i := range g {
			c := net.Clone()
			cl := c.Layers[layer]
			if cl.B == nil {
				cl.B = make([]float64, l.Out)
			}
			cl.B[i] += h
			yp := run(c, x).Outputs()[0].Data
			cl.B[i] -= 2 * h
			ym := run(c, x).Outputs()[0].Data
			for k := range yp {
				d := (yp[k] - ym[k]) / (2 * h)
				g[i] += d * d
			}
		}
		ps.g = append(ps.g, g)
	}
	return ps
}

// flatG is g_i(n) + lambda mean_n g_i(n).
func (ps perSample) flatG(lambda float64) [][]float64 {
	out := len(ps.g[0])
	mean := make([]float64, out)
	for _, g := range ps.g {
		for i, v := range g {
			mean[i] += v / float64(len(ps.g))
		}
	}
	gp := make([][]float64, len(ps.g))
	for s, g := range ps.g {
		gp[s] = make([]float64, out)
		for i, v := range g {
			gp[s][i] = v + lambda*mean[i]
		}
	}
	return gp
}

// damage prunes some weights of layer 0 of cur by hand, so that layer 1
// sees an upstream residual.
func damage(cur *onnxio.Network, rng *rand.Rand) {
	l := cur.Layers[0]
	l.Own64() // float32-resident layers: damage a float64 copy
	for q := range l.W {
		if rng.Float64() < 0.4 {
			l.W[q] = 0
		}
	}
}

// layerSums runs one pass over layer li of cur and returns its sums and
// resident data.
func layerSums(t *testing.T, e *ecp, cur *onnxio.Network, li int) (*ecpSums, *resident) {
	t.Helper()
	l := e.st.Layers[li].Layer
	s := newECPSums(l.Out, l.In)
	rd := newResident(e.n*e.rowsPer[li], l.Out, l.In)
	err := e.layerPass(cur, li, false, false, func(a, zc, z0, g []float64, rows, r0 int) error {
		ac := s.center(a, rows)
		r := sub(make([]float64, len(zc)), zc, z0)
		s.addMoments(ac, g, rows)
		s.addResidual(ac, r, g, rows, true)
		rd.put(ac, r, g, rows, r0, l.Out, l.In)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, rd
}

func plansEqual(t *testing.T, a, b *prune.Plan) {
	t.Helper()
	if a.Removed != b.Removed || a.Total != b.Total || len(a.Layers) != len(b.Layers) {
		t.Fatalf("plans differ: removed %d/%d, total %d/%d", a.Removed, b.Removed, a.Total, b.Total)
	}
	for li := range a.Layers {
		x, y := a.Layers[li], b.Layers[li]
		for q := range x.W {
			if math.Float64bits(x.W[q]) != math.Float64bits(y.W[q]) || x.Pruned[q] != y.Pruned[q] {
				t.Fatalf("layer %d weight %d differs", li, q)
			}
		}
		for i := range x.B {
			if math.Float64bits(x.B[i]) != math.Float64bits(y.B[i]) || math.Float64bits(x.BiasShift[i]) != math.Float64bits(y.BiasShift[i]) {
				t.Fatalf("layer %d bias %d differs: %v vs %v", li, i, x.B[i], y.B[i])
			}
		}
	}
}

// plansClose checks that two plans remove the same number of weights,
// disagree on at most a fraction diff of them, and set biases within tol
// (relative to the largest bias).
func plansClose(t *testing.T, a, b *prune.Plan, diff, tol float64) {
	t.Helper()
	if a.Removed != b.Removed || a.Total != b.Total || len(a.Layers) != len(b.Layers) {
		t.Fatalf("plans differ: removed %d/%d, total %d/%d", a.Removed, b.Removed, a.Total, b.Total)
	}
	differ := 0
	var bmax, dmax float64
	for li := range a.Layers {
		x, y := a.Layers[li], b.Layers[li]
		for q := range x.Pruned {
			if x.Pruned[q] != y.Pruned[q] {
				differ++
			}
		}
		for i := range x.B {
			bmax = math.Max(bmax, math.Abs(x.B[i]))
			dmax = math.Max(dmax, math.Abs(x.B[i]-y.B[i]))
		}
	}
	if float64(differ) > diff*float64(a.Removed) {
		t.Errorf("%d of %d removals differ", differ, a.Removed)
	}
	if dmax > tol*bmax {
		t.Errorf("biases differ by up to %.3g (largest %.3g)", dmax, bmax)
	}
}
