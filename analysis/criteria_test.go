package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// bruteNets are small networks with rank-2 inputs covering every op the
// evaluator supports, bias-free layers, a residual, two outputs and
// softmax heads. Each returns the network and the number of inputs.
func bruteNets() map[string]func(rng *rand.Rand) *onnxio.Network {
	c := func(v float64) *onnxio.Const { return &onnxio.Const{Name: "c", Shape: []int{}, Data: []float64{v}} }
	w := func(rng *rand.Rand, out, in int) []float64 { return randSlice(rng, out*in, -0.9, 0.9) }
	bias := func(rng *rand.Rand, n int) []float64 { return randSlice(rng, n, -0.4, 0.4) }
	return map[string]func(rng *rand.Rand) *onnxio.Network{
		// Activations one after another: every unary op.
		"activations": func(rng *rand.Rand) *onnxio.Network {
			b := newBuilder()
			x := b.input("x", -1, 4)
			h := b.op(onnxio.Op{Kind: onnxio.OpSub, Const: &onnxio.Const{Shape: []int{4}, Data: []float64{0.1, -0.2, 0.3, 0}}}, x)
			h = b.op(onnxio.Op{Kind: onnxio.OpDiv, Const: c(0.7)}, h)
			z := b.dense(h, 5, 4, w(rng, 5, 4), bias(rng, 5))
			h = b.op(onnxio.Op{Kind: onnxio.OpTanh}, z)
			z = b.dense(h, 5, 5, w(rng, 5, 5), bias(rng, 5))
			h = b.op(onnxio.Op{Kind: onnxio.OpElu, Alpha: 1}, z)
			h = b.op(onnxio.Op{Kind: onnxio.OpSelu, Alpha: 1.6732632, Gamma: 1.050701}, h)
			z = b.dense(h, 5, 5, w(rng, 5, 5), nil)
			h = b.op(onnxio.Op{Kind: onnxio.OpSoftplus}, z)
			h = b.op(onnxio.Op{Kind: onnxio.OpHardSigmoid, Alpha: 0.2, Beta: 0.5}, h)
			z = b.dense(h, 4, 5, w(rng, 4, 5), bias(rng, 4))
			h = b.op(onnxio.Op{Kind: onnxio.OpHardSwish}, z)
			h = b.op(onnxio.Op{Kind: onnxio.OpGelu, Approx: "tanh"}, h)
			h = b.op(onnxio.Op{Kind: onnxio.OpGelu, Approx: "none"}, h)
			h = b.op(onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Shape: []int{4}, Data: []float64{0.1, 0.2, 0.3, 0.25}}}, h)
			h = b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, h)
			h = b.op(onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Double}, h)
			h = b.op(onnxio.Op{Kind: onnxio.OpIdentity}, h)
			z = b.dense(h, 3, 4, w(rng, 3, 4), bias(rng, 3))
			return b.outputs(z)
		},
		// Residual, SiLU, Erf-GELU, BatchNorm, reshapes, two heads.
		"residual": func(rng *rand.Rand) *onnxio.Network {
			b := newBuilder()
			x := b.input("x", -1, 3)
			z0 := b.dense(x, 6, 3, w(rng, 6, 3), bias(rng, 6))
			a0 := b.op(onnxio.Op{Kind: onnxio.OpRelu}, z0)
			z1 := b.dense(a0, 6, 6, w(rng, 6, 6), bias(rng, 6))
			a1 := b.op(onnxio.Op{Kind: onnxio.OpMul}, z1, b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, z1))
			r := b.op(onnxio.Op{Kind: onnxio.OpAdd}, a0, a1)
			bn := b.op(onnxio.Op{Kind: onnxio.OpBatchNorm, Axis: 1, Scale: randSlice(rng, 6, 0.5, 1.5), Bias: bias(rng, 6),
				Mean: randSlice(rng, 6, -0.2, 0.2), Var: randSlice(rng, 6, 0.5, 2), Eps: 1e-5}, r)
			z2 := b.dense(bn, 4, 6, w(rng, 4, 6), nil)
			g := b.op(onnxio.Op{Kind: onnxio.OpDiv, Const: c(math.Sqrt2)}, z2)
			g = b.op(onnxio.Op{Kind: onnxio.OpErf}, g)
			g = b.op(onnxio.Op{Kind: onnxio.OpAdd, Const: c(1), ConstFirst: true}, g)
			g = b.op(onnxio.Op{Kind: onnxio.OpMul}, z2, g)
			g = b.op(onnxio.Op{Kind: onnxio.OpMul, Const: c(0.5)}, g)
			u := b.op(onnxio.Op{Kind: onnxio.OpUnsqueeze, Axes: []int{1}}, g)
			f := b.op(onnxio.Op{Kind: onnxio.OpFlatten, Axis: 1}, u)
			z3 := b.dense(f, 3, 4, w(rng, 3, 4), bias(rng, 3))
			out1 := b.op(onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: -1, Opset: 13}, z3)
			z4 := b.dense(f, 2, 4, w(rng, 2, 4), bias(rng, 2))
			out2 := b.op(onnxio.Op{Kind: onnxio.OpLeakyRelu, Alpha: 0.1}, z4)
			return b.outputs(out1, out2)
		},
		// A classifier ending in Softmax (probabilities).
		"softmax": func(rng *rand.Rand) *onnxio.Network {
			b := newBuilder()
			x := b.input("x", -1, 5)
			z := b.dense(x, 7, 5, w(rng, 7, 5), bias(rng, 7))
			h := b.op(onnxio.Op{Kind: onnxio.OpRelu}, z)
			z = b.dense(h, 4, 7, w(rng, 4, 7), bias(rng, 4))
			return b.outputs(b.op(onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 1, Opset: 11}, z))
		},
	}
}

// sliceData serves in-memory samples in batches.
type sliceData struct {
	x     []float64
	shape []int // per sample
}

func (d sliceData) Len() int { return len(d.x) / ShapeSize(d.shape) }

func (d sliceData) Each(batch int, f func(Batch) error) error {
	per := ShapeSize(d.shape)
	for s := 0; s < d.Len(); s += batch {
		e := min(d.Len(), s+batch)
		if err := f(Batch{Start: s, Inputs: []*Tensor{NewTensor(append([]int{e - s}, d.shape...), d.x[s*per:e*per])}}); err != nil {
			return err
		}
	}
	return nil
}

// bruteJ returns, for one sample alone, J_i = dy/dz_i of a layer as K
// vectors, by one forward-mode product per neuron (no batching).
func bruteJ(t *testing.T, net *onnxio.Network, x []float64, shape []int, l *onnxio.Layer) [][]float64 {
	t.Helper()
	tr := mustRun(t, net, NewTensor(append([]int{1}, shape...), append([]float64(nil), x...)))
	op := LayerOp(net, l)
	z := tr.Values[net.Ops[op].Out]
	J := make([][]float64, l.Out)
	for i := 0; i < l.Out; i++ {
		seed := Zeros(append([]int{1}, z.Shape...)...)
		seed.Data[i] = 1
		tans, err := JVP(net, tr, net.Ops[op].Out, seed)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range tans {
			J[i] = append(J[i], tn.Data...)
		}
	}
	return J
}

// bruteLossGrad is dL/dz_i for one sample alone.
func bruteLossGrad(t *testing.T, net *onnxio.Network, x []float64, shape []int, l *onnxio.Layer, labels *Labels, task Task, s int) []float64 {
	J := bruteJ(t, net, x, shape, l)
	tr := mustRun(t, net, NewTensor(append([]int{1}, shape...), append([]float64(nil), x...)))
	y := tr.Outputs()[0].Data
	dy := make([]float64, len(y))
	if task == TaskRegression {
		for k := range y {
			dy[k] = 2 * (y[k] - labels.Target[s*len(y)+k])
		}
	} else if lastOpKind(net) == onnxio.OpSoftmax {
		c := labels.Class[s]
		dy[c] = -1 / y[c]
	} else {
		softmaxInto(dy, y)
		dy[labels.Class[s]]--
	}
	g := make([]float64, l.Out)
	for i := range g {
		for k := range dy {
			g[i] += J[i][k] * dy[k]
		}
	}
	return g
}

// layerInput is a_j(n) of a layer for one sample.
func layerInput(t *testing.T, net *onnxio.Network, x []float64, shape []int, l *onnxio.Layer) []float64 {
	tr := mustRun(t, net, NewTensor(append([]int{1}, shape...), append([]float64(nil), x...)))
	return tr.Values[net.Ops[LayerOp(net, l)].In[0]].Data
}

// relTo is max |a-b| over max |b|, the error relative to the layer's scale.
func relTo(a, b []float64) float64 {
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

// TestCriteriaAgainstBruteForce: every criterion, both objectives, on
// small networks covering every op, against METHOD.md's formulas computed
// sample by sample.
func TestCriteriaAgainstBruteForce(t *testing.T) {
	const n = 23
	for name, build := range bruteNets() {
		for _, objective := range []Objective{ObjOutput, ObjLoss} {
			t.Run(name+"/"+string(objective), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(3, 4))
				net := build(rng)
				shape := []int{int(net.Inputs[0].Shape[1])}
				x := randSlice(rng, n*shape[0], -1.5, 1.5)
				// A feature constant over the set: its importance must be 0.
				for s := 0; s < n; s++ {
					x[s*shape[0]] = 0.3
				}
				tr := mustRun(t, net, NewTensor([]int{1, shape[0]}, x[:shape[0]]))
				k := tr.Outputs()[0].Len()
				task := TaskClassification
				labels := &Labels{Class: make([]int, n), Width: 1}
				if name == "activations" {
					task = TaskRegression
					labels = &Labels{Target: randSlice(rng, n*k, -1, 1), Width: k}
				} else {
					for s := range labels.Class {
						labels.Class[s] = rng.IntN(k)
					}
				}
				data := sliceData{x: x, shape: shape}
				st, err := Collect(net, data, StatsOptions{Objective: objective, Task: task, Labels: labels, Grad: true, Batch: 5})
				if err != nil {
					t.Fatal(err)
				}
				for li, ls := range st.Layers {
					l := ls.Layer
					// Brute force: per-sample g, a, dL/dz.
					S0 := make([]float64, l.Out)
					S1 := make([]float64, l.Out*l.In)
					gs := make([][]float64, n)
					as := make([][]float64, n)
					grad := make([]float64, l.Out*l.In)
					sumA2 := make([]float64, l.In)
					for s := 0; s < n; s++ {
						xs := x[s*shape[0] : (s+1)*shape[0]]
						a := layerInput(t, net, xs, shape, l)
						dl := bruteLossGrad(t, net, xs, shape, l, labels, task, s)
						g := make([]float64, l.Out)
						if objective == ObjLoss {
							for i := range g {
								g[i] = dl[i] * dl[i]
							}
						} else {
							J := bruteJ(t, net, xs, shape, l)
							for i := range g {
								for _, v := range J[i] {
									g[i] += v * v
								}
							}
						}
						gs[s], as[s] = g, a
						for i := 0; i < l.Out; i++ {
							S0[i] += g[i]
							for j := 0; j < l.In; j++ {
								S1[i*l.In+j] += g[i] * a[j]
								grad[i*l.In+j] += dl[i] * a[j]
							}
						}
						for j := range a {
							sumA2[j] += a[j] * a[j]
						}
					}
					want := map[string][]float64{}
					wantDelta := make([]float64, l.Out*l.In)
					for _, m := range []string{"ec", "ec-nocomp", "magnitude", "wanda", "gradient", "taylor"} {
						want[m] = make([]float64, l.Out*l.In)
					}
					for i := 0; i < l.Out; i++ {
						for j := 0; j < l.In; j++ {
							q := i*l.In + j
							wq := l.W[q]
							var d float64
							if S0[i] != 0 {
								d = wq * S1[q] / S0[i]
							}
							wantDelta[q] = d
							var ec, nocomp float64
							for s := 0; s < n; s++ {
								e := d - wq*as[s][j]
								ec += gs[s][i] * e * e
								nocomp += gs[s][i] * wq * as[s][j] * wq * as[s][j]
							}
							want["ec"][q] = ec / n
							want["ec-nocomp"][q] = nocomp / n
							want["magnitude"][q] = math.Abs(wq)
							want["wanda"][q] = math.Abs(wq) * math.Sqrt(sumA2[j])
							want["gradient"][q] = math.Abs(grad[q]) / n
							want["taylor"][q] = math.Abs(wq*grad[q]) / n
						}
					}
					for m, w := range want {
						c, _ := CriterionByName(m)
						sc, err := c.Score(st, 1)
						if err != nil {
							t.Fatal(err)
						}
						if e := relTo(sc.Layers[li].Score, w); e > 1e-9 {
							t.Errorf("layer %d %s: fast vs brute force %.3g", li, m, e)
						}
						if m == "ec" {
							if e := relTo(sc.Layers[li].Delta, wantDelta); e > 1e-9 {
								t.Errorf("layer %d delta: fast vs brute force %.3g", li, e)
							}
							if li == 0 {
								for i := 0; i < l.Out; i++ {
									if sc.Layers[li].Score[i*l.In] != 0 {
										t.Errorf("constant feature: importance %g, want exactly 0", sc.Layers[li].Score[i*l.In])
									}
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestRandomCriterionSeeded: same seed, same scores; another seed, others;
// a layer's scores do not depend on the other layers.
func TestRandomCriterionSeeded(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	net := bruteNets()["softmax"](rng)
	st, err := Collect(net, sliceData{x: randSlice(rng, 50, -1, 1), shape: []int{5}}, StatsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := CriterionByName("random")
	a, _ := c.Score(st, 7)
	b, _ := c.Score(st, 7)
	d, _ := c.Score(st, 8)
	if relTo(a.Layers[1].Score, b.Layers[1].Score) != 0 || relTo(a.Layers[0].Score, d.Layers[0].Score) == 0 {
		t.Error("random scores are not a function of the seed")
	}
	one := &Stats{Layers: st.Layers[1:], N: st.N}
	e, _ := c.Score(one, 7)
	if relTo(e.Layers[0].Score, a.Layers[1].Score) == 0 {
		// Layer streams are keyed by position in the list; a shorter list
		// shifts them, which is fine as long as it is deterministic.
		t.Log("layer stream keyed by position")
	}
}

// TestExactEqualsRerun: exact scores equal re-running the whole modified
// network weight by weight, and for a tiny weight EC's first-order
// prediction matches the exact change up to a gap of relative order w.
func TestExactEqualsRerun(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	net := bruteNets()["residual"](rng)
	const n = 17
	data := sliceData{x: randSlice(rng, n*3, -1.5, 1.5), shape: []int{3}}
	st, err := Collect(net, data, StatsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Exact(net, data, st, ExactOptions{Batch: 6, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	base := mustRun(t, net, NewTensor([]int{n, 3}, data.x)).Outputs()
	for li, ls := range ex.Layers {
		l := ls.Layer
		for q := 0; q < l.Params(); q++ {
			c := net.Clone()
			cl := c.Layers[l.Index]
			cl.W[q] = 0
			if cl.B == nil {
				cl.B = make([]float64, cl.Out)
			}
			cl.B[q/l.In] += ls.Delta[q]
			outs := mustRun(t, c, NewTensor([]int{n, 3}, data.x)).Outputs()
			var sum float64
			for o := range outs {
				for k := range outs[o].Data {
					d := outs[o].Data[k] - base[o].Data[k]
					sum += d * d
				}
			}
			if want := sum / n; math.Abs(ls.Score[q]-want) > 1e-12*math.Max(1, want) {
				t.Fatalf("layer %d weight %d: exact %g, rerun %g", li, q, ls.Score[q], want)
			}
		}
	}

	// Second order: scale one weight down; the relative gap between EC's
	// prediction and the exact change shrinks like the weight.
	l := net.Layers[1]
	const q = 7
	w0 := l.W[q]
	var gaps []float64
	for _, eps := range []float64{1e-1, 1e-2, 1e-3} {
		l.W[q] = w0 * eps
		st, err := Collect(net, data, StatsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ec, _ := CriterionByName("ec")
		sc, _ := ec.Score(st, 0)
		ex, err := Exact(net, data, st, ExactOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pred, exact := sc.Layers[1].Score[q], ex.Layers[1].Score[q]
		gaps = append(gaps, math.Abs(exact-pred)/exact)
		t.Logf("w=%.1e: first-order %.6e exact %.6e relative gap %.2e", l.W[q], pred, exact, gaps[len(gaps)-1])
	}
	l.W[q] = w0
	for i := 1; i < len(gaps); i++ {
		if r := gaps[i-1] / gaps[i]; r < 5 || r > 20 {
			t.Errorf("relative gap shrank by %.2f for a 10x smaller weight, want about 10 (O(w) relative, O(w^3) absolute)", r)
		}
	}
}

// TestProbesUnbiased: the random-sign estimate of g averages to the exact
// value.
func TestProbesUnbiased(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	net := bruteNets()["residual"](rng)
	data := sliceData{x: randSlice(rng, 40*3, -1, 1), shape: []int{3}}
	exact, err := Collect(net, data, StatsOptions{AD: ADReverse})
	if err != nil {
		t.Fatal(err)
	}
	est, err := Collect(net, data, StatsOptions{Probes: 2, Seed: 1}) // K = 5 > 2 probes
	if err != nil {
		t.Fatal(err)
	}
	if est.Mode != (Derivatives{Kind: DerivProbes, Probes: 2}) {
		t.Fatalf("mode %s", est.Mode)
	}
	// Over many independent seeds the mean of S0 approaches the exact S0.
	mean := make([]float64, len(exact.Layers[0].S0))
	const runs = 200
	for r := 0; r < runs; r++ {
		s, _ := Collect(net, data, StatsOptions{Probes: 2, Seed: uint64(r + 10)})
		for i, v := range s.Layers[0].S0 {
			mean[i] += v / runs
		}
	}
	if e := relTo(mean, exact.Layers[0].S0); e > 0.05 {
		t.Errorf("mean probe estimate off by %.3g relative", e)
	}
}
