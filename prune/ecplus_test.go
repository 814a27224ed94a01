package prune

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
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
func setup(t *testing.T, net *onnxio.Network, data analysis.Data, eo ECPlusOptions, task analysis.Task) *ecp {
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

func near(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

func checkClose(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	for q := range got {
		if !near(got[q], want[q], rel, abs) || math.IsNaN(got[q]) != math.IsNaN(want[q]) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.12g, want %.12g", what, q, got[q], want[q])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
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

// TestECPlusCost checks the sums and the removal cost against a direct
// per-sample computation with g from finite differences.
func TestECPlusCost(t *testing.T) {
	cases := []struct {
		name   string
		act    onnxio.OpKind
		head   onnxio.OpKind
		lambda float64
		c      float64
		dead   bool // layer 1 has a neuron that never reaches the output
		noBias bool
	}{
		{"tanh", onnxio.OpTanh, -1, 1, 0.5, false, false},
		{"relu no lambda", onnxio.OpRelu, -1, 0, 0.5, false, false},
		{"softmax head full credit", onnxio.OpTanh, onnxio.OpSoftmax, 2, 1, false, false},
		{"dead neuron", onnxio.OpTanh, -1, 1, 0.5, true, false},
		{"no bias", onnxio.OpSigmoid, -1, 1, 0.5, false, true},
	}
	for k, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 7, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			var nb []int
			if tc.noBias {
				nb = []int{1}
			}
			net := mlp(rng, []int{4, 6, 5, 3}, tc.act, tc.head, nb...)
			if tc.dead {
				for o := 0; o < 3; o++ {
					net.Layers[2].W[o*5+2] = 0
				}
			}
			data := randData(rng, 23, 4)
			e := setup(t, net, data, ECPlusOptions{Lambda: tc.lambda, C: tc.c, Rounds: 2, RefitSteps: 0}, analysis.TaskRegression)
			cur := net.Clone()
			damage(cur, rng)
			s, _ := layerSums(t, e, cur, 1)
			ps := bruteForce(t, net, cur, data, 1)
			gp := ps.flatG(tc.lambda)
			l := net.Layers[1]
			want := make([]float64, l.Out*l.In)
			for i := 0; i < l.Out; i++ {
				var s0, ma, me float64
				for n := range gp {
					s0 += gp[n][i]
					me += gp[n][i] * (ps.zc[n][i] - ps.z0[n][i])
				}
				if s0 == 0 {
					continue
				}
				me /= s0
				for j := 0; j < l.In; j++ {
					ma = 0
					for n := range gp {
						ma += gp[n][i] * ps.a[n][j] / s0
					}
					var v, cv float64
					for n := range gp {
						da := ps.a[n][j] - ma
						v += gp[n][i] * da * da
						cv += gp[n][i] * (ps.zc[n][i] - ps.z0[n][i] - me) * da
					}
					w := l.W[i*l.In+j]
					want[i*l.In+j] = w*w*v - 2*tc.c*w*cv
				}
			}
			got := s.costs(new([]float64), cur.Layers[1].W, tc.c)
			checkClose(t, "cost", got, want, 1e-6, 1e-10)
			if tc.dead {
				for j := 0; j < l.In; j++ {
					if got[2*l.In+j] != 0 {
						t.Errorf("cost of w[2,%d] = %g for a neuron that never reaches the output", j, got[2*l.In+j])
					}
				}
			}
			// The first term is N times EC's importance on a' (with g').
			for q := range got {
				if v := s.variance(q); v < 0 {
					t.Fatalf("variance[%d] = %g < 0", q, v)
				}
			}
		})
	}
}

// TestECPlusConstantFeature: a feature constant over the calibration set
// has zero variance exactly, so its removal costs nothing beyond the
// credit (which is 0 too: no covariance with a constant).
func TestECPlusConstantFeature(t *testing.T) {
	withLimits(t, 5, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(3, 3))
	net := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	data := randData(rng, 17, 3)
	e := setup(t, net, data, ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 1}, analysis.TaskRegression)
	s, _ := layerSums(t, e, net.Clone(), 0)
	cost := s.costs(new([]float64), net.Layers[0].W, 0.5)
	for i := 0; i < 4; i++ {
		if s.variance(i*3) != 0 || cost[i*3] != 0 {
			t.Errorf("row %d: constant feature has variance %g, cost %g; want 0", i, s.variance(i*3), cost[i*3])
		}
	}
}

// TestECPlusFirstPass: on the original input, the moments rebuilt from
// Collect's sums equal those accumulated directly, and Collect's sums are
// not used when its g differs (probes drawn with another seed).
func TestECPlusFirstPass(t *testing.T) {
	cases := []struct {
		name   string
		stats  analysis.StatsOptions
		reused bool
	}{
		{"reverse", analysis.StatsOptions{}, true},
		{"forward", analysis.StatsOptions{AD: analysis.ADForward}, true},
		{"probes", analysis.StatsOptions{Probes: 1}, false},
		{"loss objective", analysis.StatsOptions{Objective: analysis.ObjLoss, Task: analysis.TaskRegression}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 6, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(4, 4))
			net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, -1)
			data := randData(rng, 20, 4)
			if tc.stats.Objective == analysis.ObjLoss {
				tc.stats.Labels = &analysis.Labels{Target: make([]float64, 20*3), Width: 3}
			}
			st := collect(t, net, data, tc.stats)
			e, err := newECP(net, data, st, ECPlusOptions{Lambda: 1.5, C: 0.5, Rounds: 2}, analysis.TaskRegression, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.origPass(); err != nil {
				t.Fatal(err)
			}
			if got := e.collectMatches(0); got != tc.reused {
				t.Fatalf("collectMatches = %v, want %v", got, tc.reused)
			}
			cur := net.Clone()
			for li := range e.st.Layers {
				if !e.upstreamClean(cur, li) {
					t.Fatalf("layer %d: upstream not clean in an unchanged network", li)
				}
				l := cur.Layers[li]
				rd := newResident(e.n*e.rowsPer[li], l.Out, l.In)
				fast, err := e.firstPass(cur, li, true, rd)
				if err != nil {
					t.Fatal(err)
				}
				slow, ref := layerSums(t, e, cur, li)
				v1, v2 := make([]float64, len(l.W)), make([]float64, len(l.W))
				for q := range v1 {
					v1[q], v2[q] = fast.variance(q), slow.variance(q)
				}
				checkClose(t, "variance", v1, v2, 1e-9, 1e-12)
				checkClose(t, "S0", fast.s0, slow.s0, 1e-12, 0)
				checkClose(t, "sum g e", fast.se, make([]float64, l.Out), 0, 0)
				checkClose(t, "e", rd.e, ref.e, 0, 0)
				checkClose(t, "g", rd.g, ref.g, 0, 0)
			}
			// Once a layer changes, the ones after it are no longer clean.
			cur.Layers[0].W[3] = 0
			if e.upstreamClean(cur, 1) || !e.upstreamClean(cur, 0) {
				t.Error("upstreamClean misses a changed layer")
			}
		})
	}
}

// TestRowQuotas compares the quotas with a brute-force ranking.
func TestRowQuotas(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name     string
		score    []float64
		out, in  int
		k        int
		expected []int
	}{
		{"simple", []float64{1, 2, 3, 0, 5, 6}, 2, 3, 3, []int{2, 1}},
		{"ties by index", []float64{1, 1, 1, 1, 1, 1}, 3, 2, 3, []int{2, 1, 0}},
		{"none", []float64{1, 2, 3, 4}, 2, 2, 0, []int{0, 0}},
		{"all", []float64{1, 2, 3, 4}, 2, 2, 4, []int{2, 2}},
		{"nan last", []float64{nan, 5, 1, 2}, 2, 2, 3, []int{1, 2}},
		{"negative", []float64{-1, 0, -3, 2, -2, 1}, 3, 2, 2, []int{0, 1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rowQuotas(tc.score, tc.out, tc.in, tc.k)
			if fmt.Sprint(got) != fmt.Sprint(tc.expected) {
				t.Errorf("quotas %v, want %v", got, tc.expected)
			}
		})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		out, in := 1+rng.IntN(6), 1+rng.IntN(6)
		score := make([]float64, out*in)
		for q := range score {
			score[q] = float64(rng.IntN(4)) // many ties
		}
		k := rng.IntN(out*in + 1)
		idx := make([]int, len(score))
		for q := range idx {
			idx[q] = q
		}
		sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] < score[idx[b]] })
		want := make([]int, out)
		for _, q := range idx[:k] {
			want[q/in]++
		}
		got := rowQuotas(score, out, in, k)
		sum := 0
		for _, v := range got {
			sum += v
		}
		if sum != k || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("trial %d: quotas %v (sum %d), want %v (k %d)", trial, got, sum, want, k)
		}
	}
	for quota := 0; quota < 20; quota++ {
		for rounds := 1; rounds < 7; rounds++ {
			sum := 0
			for r := 0; r < rounds; r++ {
				tk := roundTake(quota, r, rounds)
				if tk < quota/rounds || tk > quota/rounds+1 {
					t.Errorf("roundTake(%d, %d, %d) = %d: uneven", quota, r, rounds, tk)
				}
				sum += tk
			}
			if sum != quota {
				t.Errorf("quota %d over %d rounds: takes sum to %d", quota, rounds, sum)
			}
		}
	}
}

// TestSmallest compares the selection with a full sort, on data with many
// equal scores (broken by index) and NaNs.
func TestSmallest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 300; trial++ {
		n := rng.IntN(200)
		cs := make([]scored, n)
		for q := range cs {
			v := float64(rng.IntN(1 + trial%20))
			if rng.IntN(50) == 0 {
				v = math.NaN()
			}
			cs[q] = scored{v, q}
		}
		rng.Shuffle(n, func(a, b int) { cs[a], cs[b] = cs[b], cs[a] })
		k := rng.IntN(n + 1)
		want := append([]scored(nil), cs...)
		sort.Slice(want, func(a, b int) bool { return cmpScored(want[a], want[b]) < 0 })
		smallest(cs, k)
		got := append([]scored(nil), cs[:k]...)
		sort.Slice(got, func(a, b int) bool { return cmpScored(got[a], got[b]) < 0 })
		for q := range got {
			if got[q].q != want[q].q {
				t.Fatalf("trial %d (n %d, k %d): element %d is %v, want %v", trial, n, k, q, got[q], want[q])
			}
		}
		if len(cs) != n {
			t.Fatal("length changed")
		}
	}
}

// TestFullLMSolve: the damped system is solved exactly when it is
// positive definite, and by more damping then a diagonal solve when not.
func TestFullLMSolve(t *testing.T) {
	g := []float64{4, 1, 0, 1, 3, 0.5, 0, 0.5, 2}
	grad := []float64{1, -2, 0.5}
	const mu = 0.1
	x, err := (&fullLM{g: g, n: 3}).solve(grad, mu)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // (G + mu diag(G)) x = -grad
		var v float64
		for j := 0; j < 3; j++ {
			v += g[i*3+j] * x[j]
		}
		v += mu * g[i*3+i] * x[i]
		if !near(v, -grad[i], 1e-12, 1e-12) {
			t.Errorf("row %d: %g, want %g", i, v, -grad[i])
		}
	}
	// Indefinite even with mu raised four times (to 10): diagonal.
	ind := []float64{1, 10, 10, 1}
	x, err = (&fullLM{g: ind, n: 2}).solve([]float64{1, 2}, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "diagonal fallback", x, []float64{-1.0 / 11, -2.0 / 11}, 1e-12, 0)
}

// TestDefaultECPlusOptions checks the defaults of the recipe.
func TestDefaultECPlusOptions(t *testing.T) {
	if o := DefaultECPlusOptions(); o != (ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2, Recon: ReconAuto, ReconDamp: 0.01}) {
		t.Errorf("defaults %+v", o)
	}
	if err := DefaultECPlusOptions().validate(); err != nil {
		t.Error(err)
	}
}

// TestGram compares the Gram product with a direct one, whole matrix.
func TestGram(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 3, 63, 64, 65, 130} {
		for _, rows := range []int{0, 1, 7, 100} {
			a := randSlice(rng, rows*n)
			c := randSlice(rng, n*n)
			want := append([]float64(nil), c...)
			for i := 0; i < n; i++ {
				for j := 0; j < n; j++ {
					var v float64
					for k := 0; k < rows; k++ {
						v += a[k*n+i] * a[k*n+j]
					}
					want[i*n+j] += 0.5 * v
				}
			}
			gram(0.5, a, rows, n, c)
			for q := range c {
				if !near(c[q], want[q], 1e-12, 1e-12) {
					t.Fatalf("n %d rows %d: c[%d,%d] = %g, want %g", n, rows, q/n, q%n, c[q], want[q])
				}
			}
		}
	}
}

func randSlice(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}

// TestECPlusResidualUpdate: e after the in-memory update for a round's
// removals equals e recomputed from scratch with the new weights, and so
// do the sums built from it.
//
// Dense removals go through a matrix product, sparse ones through one
// axpy per weight (the 70-wide layers make 1% sparse enough); with probes
// the products run in float32, hence the looser tolerance there.
func TestECPlusResidualUpdate(t *testing.T) {
	type tcase struct {
		li      int
		density float64
		f32     bool
	}
	var cases []tcase
	for _, li := range []int{0, 1, 2} {
		for _, d := range []float64{0.3, 0.01} {
			for _, f := range []bool{false, true} {
				cases = append(cases, tcase{li, d, f})
			}
		}
	}
	for _, tc := range cases {
		li := tc.li
		t.Run(fmt.Sprintf("layer %d density %g f32 %v", li, tc.density, tc.f32), func(t *testing.T) {
			withLimits(t, 6, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(uint64(li), 9))
			net := mlp(rng, []int{4, 70, 5, 3}, onnxio.OpTanh, -1)
			data := randData(rng, 19, 4)
			e := setup(t, net, data, ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 2}, analysis.TaskRegression)
			cur := net.Clone()
			if li > 0 {
				damage(cur, rng)
			}
			s, rd := layerSums(t, e, cur, li)
			rel, abs := 1e-12, 1e-12
			if tc.f32 {
				rd.f32 = true
				rd.seal()
				rel, abs = 1e-5, 1e-7
			}
			l := cur.Layers[li]
			var removed []scored
			for q := range l.W {
				if rng.Float64() < tc.density || q == len(l.W)/2 {
					removed = append(removed, scored{0, q})
				}
			}
			rd.update(removed, l.W, s.shift, l.In, rd.constant(l.In))
			for _, c := range removed {
				l.W[c.q] = 0
			}
			s.resetResidual()
			rd.addResidual(s, true)
			fresh, rf := layerSums(t, e, cur, li)
			checkClose(t, "e", rd.e, rf.e, rel, abs)
			checkClose(t, "sum g e", s.se, fresh.se, 100*rel, abs)
			checkClose(t, "sum g e a", s.sea, fresh.sea, 100*rel, abs)

			// Restricted to some rows and columns, sea is the same there
			// and zero elsewhere.
			var rows, cols []int
			for i := 0; i < l.Out; i += 2 {
				rows = append(rows, i)
			}
			for j := 1; j < l.In; j += 2 {
				cols = append(cols, j)
			}
			part := newECPSums(l.Out, l.In)
			rd.addResidualOn(part, true, rows, cols)
			want := make([]float64, len(s.sea))
			for _, i := range rows {
				for _, j := range cols {
					want[i*l.In+j] = s.sea[i*l.In+j]
				}
			}
			checkClose(t, "sum g e a on a subset", part.sea, want, 100*rel, abs)
			checkClose(t, "sum g e (subset pass)", part.se, s.se, 0, 0)
		})
	}
}

// TestECPlusLayer prunes one layer and checks the count, the per-row
// quotas, the zeros, and that the final bias makes the g-weighted mean
// residual zero; resident and streamed passes must agree.
func TestECPlusLayer(t *testing.T) {
	cases := []struct {
		name   string
		mem    int
		k      int
		rounds int
		noBias bool
		dead   bool
	}{
		{"resident", 1 << 25, 12, 3, false, false},
		{"streamed", 10, 12, 3, false, false},
		{"one round", 1 << 25, 20, 1, false, false},
		{"more rounds than quota", 1 << 25, 5, 8, false, false},
		{"zero budget", 1 << 25, 0, 4, false, false},
		{"no bias streamed", 10, 15, 4, true, false},
		{"dead neuron", 1 << 25, 12, 2, false, true},
	}
	var residentLayer *onnxio.Layer // the "resident" case's result, for "streamed"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 8, tc.mem, 5e7)
			rng := rand.New(rand.NewPCG(5, 5))
			var nb []int
			if tc.noBias {
				nb = []int{1}
			}
			net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, -1, nb...)
			if tc.dead { // neuron 1 of layer 1 never reaches the output
				for o := 0; o < 3; o++ {
					net.Layers[2].W[o*5+1] = 0
				}
			}
			data := randData(rng, 21, 4)
			// Selection only: the reconstruction has its own test.
			eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: tc.rounds, Recon: ReconOff}
			e := setup(t, net, data, eo, analysis.TaskRegression)
			cur := net.Clone()
			damage(cur, rng)
			s0, _ := layerSums(t, e, cur, 1)
			l := cur.Layers[1]
			ec := make([]float64, len(l.W))
			for q, w := range l.W {
				ec[q] = w * w * s0.variance(q)
			}
			quota := rowQuotas(ec, l.Out, l.In, tc.k)
			w0 := append([]float64(nil), l.W...)
			res, err := e.pruneLayer(cur, 1, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if res.resident != (tc.mem > 100) {
				t.Errorf("resident = %v", res.resident)
			}
			if res.removed != tc.k {
				t.Errorf("removed %d, want %d", res.removed, tc.k)
			}
			for i := 0; i < l.Out; i++ {
				n := 0
				for j := 0; j < l.In; j++ {
					q := i*l.In + j
					if res.pruned[q] {
						n++
						if l.W[q] != 0 {
							t.Errorf("w[%d] pruned but %g", q, l.W[q])
						}
					} else if l.W[q] != w0[q] {
						t.Errorf("w[%d] kept but changed from %g to %g", q, w0[q], l.W[q])
					}
				}
				if n != quota[i] {
					t.Errorf("row %d: %d removed, quota %d", i, n, quota[i])
				}
			}
			// The final residual, recomputed from scratch, has zero
			// g-weighted mean in every neuron.
			s, _ := layerSums(t, e, cur, 1)
			for i := 0; i < l.Out; i++ {
				if math.Abs(s.se[i]) > 1e-12*(s.s0[i]+1) {
					t.Errorf("neuron %d: sum g e = %g after the bias, want 0", i, s.se[i])
				}
				if s.s0[i] == 0 && math.Abs(s.e1[i]) > 1e-12 {
					// Where g is zero, the plain mean is zero instead.
					t.Errorf("neuron %d (never reaching the output): sum e = %g, want 0", i, s.e1[i])
				}
			}
			if tc.dead && s.s0[1] != 0 {
				t.Errorf("S0 of the dead neuron = %g", s.s0[1])
			}
			switch tc.name {
			case "resident":
				residentLayer = l
			case "streamed":
				if residentLayer == nil {
					t.Fatal("the resident case did not run")
				}
				checkClose(t, "W resident vs streamed", l.W, residentLayer.W, 0, 0)
				checkClose(t, "B resident vs streamed", l.B, residentLayer.B, 1e-9, 1e-12)
			}
		})
	}
}

// refitFixture is a pruned network and the refitter over it.
func refitFixture(t *testing.T, head onnxio.OpKind, task analysis.Task, sparsity float64) (*ecp, *onnxio.Network, *refitter) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(head+2)))
	net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, head)
	data := randData(rng, 25, 4)
	eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 2}
	e := setup(t, net, data, eo, task)
	cur := net.Clone()
	for li := range e.st.Layers {
		k := Count(sparsity, net.Layers[li].Params())
		if _, err := e.pruneLayer(cur, li, k); err != nil {
			t.Fatal(err)
		}
	}
	r, err := newRefitter(e, cur)
	if err != nil {
		t.Fatal(err)
	}
	return e, cur, r
}

// TestECPlusRefitLinearisation checks the gradient and the (generalised)
// Gauss-Newton matrix against finite differences, the matrix-free product
// against the assembled matrix, and CG against a dense solve.
func TestECPlusRefitLinearisation(t *testing.T) {
	cases := []struct {
		name   string
		head   onnxio.OpKind
		task   analysis.Task
		kl     bool
		gather int
	}{
		{"regression", -1, analysis.TaskRegression, false, 1 << 23},
		{"regression by batch", -1, analysis.TaskRegression, false, 0},
		{"logits classifier", -1, analysis.TaskClassification, true, 1 << 23},
		{"softmax head", onnxio.OpSoftmax, analysis.TaskRegression, true, 1 << 23},
		{"logsoftmax head by batch", onnxio.OpLogSoftmax, analysis.TaskClassification, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 9, 1<<25, 5e7)
			og := ecpGather
			ecpGather = tc.gather
			t.Cleanup(func() { ecpGather = og })
			e, _, r := refitFixture(t, tc.head, tc.task, 0.5)
			if r.rv.kl != tc.kl {
				t.Fatalf("kl = %v, want %v", r.rv.kl, tc.kl)
			}
			lin, grad, f, err := r.linearizeFull()
			if err != nil {
				t.Fatal(err)
			}
			g := lin.(*fullLM).g
			if f0, err := r.objective(false); err != nil || !near(f, f0, 1e-12, 0) {
				t.Errorf("objective from the linearisation %g, directly %g (%v)", f, f0, err)
			}
			// Lanczos on the assembled matrix (used above ecpCholeskyMax
			// biases) solves the same scaled system as Cholesky, for every
			// damping from one basis.
			kl := newKrylovLM(lin.(*fullLM))
			for _, mu := range []float64{1e-3, 0.1, 1, 10, 1e3} {
				xc, err := lin.solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				xk, err := kl.solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, fmt.Sprintf("Lanczos step at damping %g", mu), xk, xc, 1e-4, 1e-9)
			}
			_, gradFree, ff, err := r.linearizeFree()
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "matrix-free gradient", gradFree, grad, 1e-12, 1e-15)
			if !near(ff, f, 1e-12, 0) {
				t.Errorf("objective from the matrix-free linearisation %g, want %g", ff, f)
			}
			th := r.get()
			nb := r.nb
			const h = 1e-5
			fdGrad := make([]float64, nb)
			// Per-sample outputs at theta +- h e_b give J by central
			// differences.
			outs := func(th []float64) [][]float64 {
				r.set(th)
				var ys [][]float64
				if err := r.each(false, func(tr *analysis.Trace, _ [][]float64, n int) error {
					y := tr.Values[r.rv.out[0]].Data
					per := len(y) / n
					for s := 0; s < n; s++ {
						ys = append(ys, append([]float64(nil), y[s*per:(s+1)*per]...))
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				return ys
			}
			y := outs(th)
			jac := make([][][]float64, len(y)) // [sample][component][param]
			for s := range jac {
				jac[s] = make([][]float64, len(y[s]))
				for p := range jac[s] {
					jac[s][p] = make([]float64, nb)
				}
			}
			for b := 0; b < nb; b++ {
				tp := append([]float64(nil), th...)
				tp[b] += h
				yp := outs(tp)
				fp, err := r.objective(false)
				if err != nil {
					t.Fatal(err)
				}
				tp[b] -= 2 * h
				ym := outs(tp)
				fm, err := r.objective(false)
				if err != nil {
					t.Fatal(err)
				}
				fdGrad[b] = (fp - fm) / (2 * h)
				for s := range y {
					for p := range y[s] {
						jac[s][p][b] = (yp[s][p] - ym[s][p]) / (2 * h)
					}
				}
			}
			r.set(th)
			checkClose(t, "gradient", grad, fdGrad, 1e-5, 1e-9)
			// G over all samples, and over the first batch alone (the
			// matrix-free refit's curvature samples when there are more).
			want := make([]float64, nb*nb)
			wantSub := make([]float64, nb*nb)
			const sub = 9 // one batch (withLimits above)
			for s := range y {
				k := len(y[s])
				hm := make([]float64, k*k)
				if r.rv.kl {
					p := make([]float64, k)
					logSoftmax(p, y[s])
					for a := range p {
						p[a] = math.Exp(p[a])
					}
					for a := 0; a < k; a++ {
						for c := 0; c < k; c++ {
							hm[a*k+c] = -p[a] * p[c]
						}
						hm[a*k+a] += p[a]
					}
				} else {
					for a := 0; a < k; a++ {
						hm[a*k+a] = 2
					}
				}
				for b1 := 0; b1 < nb; b1++ {
					for b2 := b1; b2 < nb; b2++ {
						var v float64
						for a := 0; a < k; a++ {
							for c := 0; c < k; c++ {
								v += jac[s][a][b1] * hm[a*k+c] * jac[s][c][b2]
							}
						}
						want[b1*nb+b2] += v / float64(e.n)
						if s < sub {
							wantSub[b1*nb+b2] += v / sub
						}
					}
				}
			}
			upper := func(m []float64) []float64 {
				var u []float64
				for b1 := 0; b1 < nb; b1++ {
					u = append(u, m[b1*nb+b1:(b1+1)*nb]...)
				}
				return u
			}
			checkClose(t, "Gauss-Newton matrix", upper(g), upper(want), 1e-5, 1e-8)

			// Matrix-free products and CG.
			full := mat.NewSymDense(nb, append([]float64(nil), g...))
			v := make([]float64, nb)
			for b := range v {
				v[b] = math.Sin(float64(b) + 1)
			}
			gv, err := r.gv(v)
			if err != nil {
				t.Fatal(err)
			}
			wantGv := mat.NewVecDense(nb, nil)
			wantGv.MulVec(full, mat.NewVecDense(nb, v))
			checkClose(t, "G v", gv, wantGv.RawVector().Data, 1e-9, 1e-12)

			// One Lanczos basis serves every damping: each solution is
			// the direct one's, to the 1e-6 relative residual it stops at
			// (for the smallest damping; larger ones converge faster).
			ok := ecpKrylov
			ecpKrylov = 50 // more than nb: the basis can span the space
			t.Cleanup(func() { ecpKrylov = ok })
			free := &freeLM{r: r, scale: 0.7}
			neg := make([]float64, nb)
			for b := range neg {
				neg[b] = -grad[b]
			}
			for _, mu := range []float64{0.1, 1, 10, 1e3} {
				x, err := free.solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				a := mat.NewSymDense(nb, nil)
				a.CopySym(full)
				for b := 0; b < nb; b++ {
					a.SetSym(b, b, a.At(b, b)+mu*0.7)
				}
				var xs mat.VecDense
				if err := xs.SolveVec(a, mat.NewVecDense(nb, neg)); err != nil {
					t.Fatal(err)
				}
				var ax mat.VecDense
				ax.MulVec(a, mat.NewVecDense(nb, x))
				var rn, gn float64
				for b := range grad {
					rn += (ax.AtVec(b) + grad[b]) * (ax.AtVec(b) + grad[b])
					gn += grad[b] * grad[b]
				}
				if math.Sqrt(rn) > 2e-6*math.Sqrt(gn) {
					t.Errorf("damping %g: residual %g, gradient %g", mu, math.Sqrt(rn), math.Sqrt(gn))
				}
				checkClose(t, fmt.Sprintf("solution at damping %g", mu), x, xs.RawVector().Data, 1e-3, 1e-9)
			}
			if len(free.q) > nb {
				t.Errorf("%d Lanczos vectors for %d parameters", len(free.q), nb)
			}

			// Curvature from the first batch only.
			oc := ecpCurvSamples
			ecpCurvSamples = sub
			t.Cleanup(func() { ecpCurvSamples = oc })
			if _, _, err := r.gradient(); err != nil { // keeps the curvature samples' traces
				t.Fatal(err)
			}
			if r.curvN != sub {
				t.Fatalf("curvature from %d samples, want %d", r.curvN, sub)
			}
			gvSub, err := r.gv(v)
			if err != nil {
				t.Fatal(err)
			}
			wantGvSub := mat.NewVecDense(nb, nil)
			wantGvSub.MulVec(mat.NewSymDense(nb, wantSub), mat.NewVecDense(nb, v))
			checkClose(t, "G v on the curvature samples", gvSub, wantGvSub.RawVector().Data, 1e-5, 1e-8)
			// The assembled G too; the gradient and objective stay over
			// all samples.
			linSub, gradSub, fSub, err := r.linearizeFull()
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, "Gauss-Newton matrix on the curvature samples", upper(linSub.(*fullLM).g), upper(wantSub), 1e-5, 1e-8)
			checkClose(t, "gradient with curvature samples", gradSub, grad, 1e-12, 1e-15)
			if !near(fSub, f, 1e-12, 0) {
				t.Errorf("objective with curvature samples %g, want %g", fSub, f)
			}
		})
	}
}

// TestECPlusRefit: the refit lowers the objective, assembled or
// matrix-free, and changes nothing when the objective is already 0.
func TestECPlusRefit(t *testing.T) {
	cases := []struct {
		name     string
		head     onnxio.OpKind
		task     analysis.Task
		jac      float64
		sparsity float64
		lanczos  bool // the assembled matrix solved by Lanczos
	}{
		{"regression", -1, analysis.TaskRegression, 5e7, 0.6, false},
		{"regression Lanczos", -1, analysis.TaskRegression, 5e7, 0.6, true},
		{"classifier Lanczos", -1, analysis.TaskClassification, 5e7, 0.6, true},
		{"regression matrix-free", -1, analysis.TaskRegression, 0, 0.6, false},
		{"classifier", -1, analysis.TaskClassification, 5e7, 0.6, false},
		{"softmax matrix-free", onnxio.OpSoftmax, analysis.TaskClassification, 0, 0.6, false},
		{"zero sparsity", -1, analysis.TaskRegression, 5e7, 0, false},
		{"zero sparsity matrix-free", onnxio.OpSoftmax, analysis.TaskClassification, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 9, 1<<25, tc.jac)
			if tc.lanczos {
				oc := ecpCholeskyMax
				ecpCholeskyMax = 0
				t.Cleanup(func() { ecpCholeskyMax = oc })
			}
			e, cur, r := refitFixture(t, tc.head, tc.task, tc.sparsity)
			f0, err := r.objective(false)
			if err != nil {
				t.Fatal(err)
			}
			th0 := r.get()
			if err := e.refit(cur, 2); err != nil {
				t.Fatal(err)
			}
			r2, _ := newRefitter(e, cur)
			f1, err := r2.objective(false)
			if err != nil {
				t.Fatal(err)
			}
			th1 := r2.get()
			if tc.sparsity == 0 {
				if f0 != 0 {
					t.Fatalf("objective %g at zero sparsity, want 0", f0)
				}
				checkClose(t, "biases", th1, th0, 0, 0)
				return
			}
			if !(f1 < f0) {
				t.Errorf("objective %g after the refit, %g before: want lower", f1, f0)
			}
		})
	}
}

// TestObjectiveBelow: an evaluation stops at its bound with +Inf and is
// exact below it.
func TestObjectiveBelow(t *testing.T) {
	withLimits(t, 5, 1<<25, 5e7)
	_, _, r := refitFixture(t, -1, analysis.TaskRegression, 0.6)
	f, err := r.objective(false)
	if err != nil || !(f > 0) {
		t.Fatalf("objective %g, %v", f, err)
	}
	for _, tc := range []struct {
		bound float64
		want  float64
	}{{f * 2, f}, {f, f}, {f * 0.999, math.Inf(1)}, {0, math.Inf(1)}} {
		got, err := r.objectiveBelow(true, tc.bound)
		if err != nil || got != tc.want {
			t.Errorf("bound %g: %g (%v), want %g", tc.bound, got, err, tc.want)
		}
	}
}

// TestECPlusRefitNoProgress: when no damping lowers the objective the
// refit keeps the biases it had.
func TestECPlusRefitNoProgress(t *testing.T) {
	withLimits(t, 9, 1<<25, 5e7)
	e, cur, r := refitFixture(t, -1, analysis.TaskRegression, 0.6)
	// Two full refits converge; a third finds (almost) nothing and must
	// never increase the objective.
	for i := 0; i < 3; i++ {
		f0, _ := r.objective(false)
		if err := e.refit(cur, 4); err != nil {
			t.Fatal(err)
		}
		f1, _ := r.objective(false)
		if f1 > f0 {
			t.Fatalf("refit %d raised the objective from %g to %g", i, f0, f1)
		}
	}
}

func plansEqual(t *testing.T, a, b *Plan) {
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

// TestECPlusPlan runs the whole method: budgets from the EC scores,
// consistent plans, determinism, and no change at zero sparsity.
func TestECPlusPlan(t *testing.T) {
	cases := []struct {
		name  string
		opt   Options
		stats analysis.StatsOptions
		mem   int
		task  analysis.Task
		recon string // "": ReconOff, so that kept weights stay as they were
	}{
		{"global", Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"global streamed", Options{Sparsity: 0.7}, analysis.StatsOptions{}, 10, analysis.TaskRegression, ""},
		{"per layer", Options{Sparsity: 0.5, Scope: Layer}, analysis.StatsOptions{}, 1 << 25, analysis.TaskClassification, ""},
		{"skip and fixed", Options{Sparsity: 0.6, Skip: []string{"W2"}, LayerSparsity: map[string]float64{"W0": 0.25}}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"forward mode", Options{Sparsity: 0.8}, analysis.StatsOptions{AD: analysis.ADForward}, 1 << 25, analysis.TaskRegression, ""},
		{"probes", Options{Sparsity: 0.8}, analysis.StatsOptions{Probes: 2}, 1 << 25, analysis.TaskClassification, ""},
		{"probes streamed", Options{Sparsity: 0.8}, analysis.StatsOptions{Probes: 2}, 10, analysis.TaskClassification, ""},
		{"zero sparsity", Options{Sparsity: 0}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ""},
		{"reconstruction", Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, analysis.TaskRegression, ReconOn},
		{"reconstruction where it helps", Options{Sparsity: 0.7}, analysis.StatsOptions{}, 1 << 25, TaskAuto, ReconAuto},
		{"reconstruction, streamed", Options{Sparsity: 0.7}, analysis.StatsOptions{}, 10, analysis.TaskRegression, ReconOn},
	}
	for k, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 10, tc.mem, 5e7)
			rng := rand.New(rand.NewPCG(uint64(k), 77))
			net := mlp(rng, []int{5, 7, 6, 4}, onnxio.OpTanh, -1, 1)
			data := randData(rng, 31, 5)
			st := collect(t, net, data, tc.stats)
			sc := ecScores(t, st)
			recon := tc.recon
			if recon == "" {
				recon = ReconOff
			}
			eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 3, RefitSteps: 2, Recon: recon, ReconDamp: 0.01}
			budget, err := Select(net, sc, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := ECPlus(net, data, st, sc, tc.opt, eo, tc.task, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Removed != budget.Removed || plan.Total != budget.Total {
				t.Errorf("removed %d of %d, budget %d of %d", plan.Removed, plan.Total, budget.Removed, budget.Total)
			}
			for li, lp := range plan.Layers {
				l := net.Layers[li]
				if lp.Layer != l || lp.Removed != budget.Layers[li].Removed {
					t.Errorf("layer %d: removed %d, budget %d", li, lp.Removed, budget.Layers[li].Removed)
				}
				n := 0
				for q, p := range lp.Pruned {
					if p {
						n++
						if lp.W[q] != 0 {
							t.Errorf("layer %d: pruned weight %d is %g", li, q, lp.W[q])
						}
					} else if lp.W[q] != l.W[q] && recon == ReconOff {
						t.Errorf("layer %d: kept weight %d changed", li, q)
					}
				}
				if n != lp.Removed || len(lp.B) != l.Out || len(lp.BiasShift) != l.Out {
					t.Errorf("layer %d: %d marked, %d removed, %d biases, %d shifts", li, n, lp.Removed, len(lp.B), len(lp.BiasShift))
				}
				for i := range lp.B {
					old := 0.0
					if l.B != nil {
						old = l.B[i]
					}
					if lp.B[i]-old != lp.BiasShift[i] {
						t.Errorf("layer %d: bias shift %g, but bias went from %g to %g", li, lp.BiasShift[i], old, lp.B[i])
					}
					if tc.opt.Sparsity == 0 && lp.BiasShift[i] != 0 {
						t.Errorf("layer %d: bias shift %g at zero sparsity", li, lp.BiasShift[i])
					}
				}
			}
			if net.Layers[1].B != nil {
				t.Error("the original network was modified")
			}
			again, err := ECPlus(net, data, st, sc, tc.opt, eo, tc.task, nil)
			if err != nil {
				t.Fatal(err)
			}
			plansEqual(t, plan, again)
		})
	}
}

// TestECPlusThreads: the plan does not depend on the number of CPUs the
// parallel products run on.
func TestECPlusThreads(t *testing.T) {
	withLimits(t, 64, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(12, 12))
	net := mlp(rng, []int{90, 140, 70, 10}, onnxio.OpRelu, -1)
	data := randData(rng, 150, 90)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	eo := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2}
	var plans []*Plan
	for _, procs := range []int{1, 4} {
		old := runtime.GOMAXPROCS(procs)
		plan, err := ECPlus(net, data, st, sc, Options{Sparsity: 0.8}, eo, analysis.TaskClassification, nil)
		runtime.GOMAXPROCS(old)
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, plan)
	}
	plansEqual(t, plans[0], plans[1])
}

// TestECPlusBeatsEC: on a small network, the pruned outputs are closer to
// the original's than one-shot EC's at the same budget.
func TestECPlusBeatsEC(t *testing.T) {
	withLimits(t, 16, 1<<25, 5e7)
	rng := rand.New(rand.NewPCG(8, 8))
	net := mlp(rng, []int{6, 16, 12, 3}, onnxio.OpTanh, -1)
	data := randData(rng, 80, 6)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	opt := Options{Sparsity: 0.7, Compensate: true}
	ecPlan, err := Select(net, sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	plus, err := ECPlus(net, data, st, sc, opt, ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 4, RefitSteps: 2}, analysis.TaskRegression, nil)
	if err != nil {
		t.Fatal(err)
	}
	errOf := func(p *Plan) float64 {
		q, err := analysis.Evaluate(Apply(net, p), net, data, nil, analysis.TaskRegression, 32, nil)
		if err != nil {
			t.Fatal(err)
		}
		return *q.SqErr
	}
	if a, b := errOf(plus), errOf(ecPlan); !(a < b) {
		t.Errorf("ec+ output error %g, ec %g: want ec+ lower", a, b)
	}
}

// TestECPlusErrors covers bad options and inputs.
func TestECPlusErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	net := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	data := randData(rng, 10, 3)
	st := collect(t, net, data, analysis.StatsOptions{})
	sc := ecScores(t, st)
	good := ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 2, RefitSteps: 1}
	other := mlp(rng, []int{3, 4, 2}, onnxio.OpTanh, -1)
	cases := []struct {
		name   string
		net    *onnxio.Network
		sc     *analysis.Scores
		opt    Options
		eo     ECPlusOptions
		option bool // an *OptionError
	}{
		{"negative lambda", net, sc, Options{Sparsity: 0.5}, ECPlusOptions{Lambda: -1, C: 0.5, Rounds: 1}, true},
		{"nan c", net, sc, Options{Sparsity: 0.5}, ECPlusOptions{Lambda: 1, C: math.NaN(), Rounds: 1}, true},
		{"no rounds", net, sc, Options{Sparsity: 0.5}, ECPlusOptions{Lambda: 1, C: 0.5}, true},
		{"negative refit", net, sc, Options{Sparsity: 0.5}, ECPlusOptions{Lambda: 1, C: 0.5, Rounds: 1, RefitSteps: -1}, true},
		{"nm", net, sc, Options{NM: &NM{2, 4}}, good, true},
		{"bad sparsity", net, sc, Options{Sparsity: 1.5}, good, true},
		{"scores of another network", other, sc, Options{Sparsity: 0.5}, good, false},
		{"no scores", net, nil, Options{Sparsity: 0.5}, good, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ECPlus(tc.net, data, st, tc.sc, tc.opt, tc.eo, analysis.TaskRegression, nil)
			if err == nil {
				t.Fatal("no error")
			}
			var oe *OptionError
			if errors.As(err, &oe) != tc.option {
				t.Errorf("error %v: option error %v, want %v", err, !tc.option, tc.option)
			}
		})
	}
}
