package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// mixedNet builds a small network on a rank-3 input [N, T, C] exercising
// what real exports contain: Dense layers with and without bias, Tanh, a
// SiLU written as Mul(z, Sigmoid(z)), a residual Add of two branches, the
// Erf-GELU pattern Div->Erf->Add->Mul->Mul, Flatten, BatchNorm, LeakyRelu,
// a LogSoftmax head, and a second output through Sigmoid and Reshape.
func mixedNet(rng *rand.Rand) *onnxio.Network {
	w := func(out, in int) []float64 { return randSlice(rng, out*in, -0.8, 0.8) }
	bias := func(n int) []float64 { return randSlice(rng, n, -0.5, 0.5) }
	c := func(v float64) *onnxio.Const { return &onnxio.Const{Name: "c", Shape: sh(), Data: []float64{v}} }
	b := newBuilder()
	x := b.input("x", -1, 2, 4)
	z0 := b.dense(x, 6, 4, w(6, 4), bias(6))
	a0 := b.op(onnxio.Op{Kind: onnxio.OpTanh}, z0)
	z1 := b.dense(a0, 6, 6, w(6, 6), bias(6))
	a1 := b.op(onnxio.Op{Kind: onnxio.OpMul}, z1, b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, z1))
	res := b.op(onnxio.Op{Kind: onnxio.OpAdd}, a0, a1)
	z2 := b.dense(res, 5, 6, w(5, 6), nil)
	g := b.op(onnxio.Op{Kind: onnxio.OpDiv, Const: c(math.Sqrt2)}, z2)
	g = b.op(onnxio.Op{Kind: onnxio.OpErf}, g)
	g = b.op(onnxio.Op{Kind: onnxio.OpAdd, Const: c(1), ConstFirst: true}, g)
	g = b.op(onnxio.Op{Kind: onnxio.OpMul}, z2, g)
	g = b.op(onnxio.Op{Kind: onnxio.OpMul, Const: c(0.5)}, g)
	fl := b.op(onnxio.Op{Kind: onnxio.OpFlatten, Axis: 1}, g)
	bn := b.op(onnxio.Op{Kind: onnxio.OpBatchNorm, Axis: 1, Scale: randSlice(rng, 10, 0.5, 1.5), Bias: bias(10),
		Mean: randSlice(rng, 10, -0.2, 0.2), Var: randSlice(rng, 10, 0.5, 2), Eps: 1e-5}, fl)
	z3 := b.dense(bn, 4, 10, w(4, 10), bias(4))
	a3 := b.op(onnxio.Op{Kind: onnxio.OpLeakyRelu, Alpha: 0.1}, z3)
	z4 := b.dense(a3, 3, 4, w(3, 4), bias(3))
	out1 := b.op(onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: -1, Opset: 13}, z4)
	out2 := b.op(onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{0, 2, 2}}, b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, z3))
	return b.outputs(out1, out2)
}

// perSample lays out output tensors (each [N, ...]) as y[n][k], k running
// over all outputs' per-sample components in output order.
func perSample(outs []*Tensor, n int) [][]float64 {
	y := make([][]float64, n)
	for _, o := range outs {
		per := o.Len() / n
		for s := 0; s < n; s++ {
			y[s] = append(y[s], o.Data[s*per:(s+1)*per]...)
		}
	}
	return y
}

// TestNetworkJacobians checks, on a network mixing every construct real
// exports use, that for each layer the forward-mode J (one tangent per
// neuron, seeded at every position of the Dense output) equals the
// reverse-mode J (one cotangent per output component, all layers in one
// VJP) to 1e-9, and that both equal finite differences of the outputs
// w.r.t. the layer's bias: J_i(n) = dy(n)/db_i.
func TestNetworkJacobians(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	net := mixedNet(rng)
	const n = 3
	in := NewTensor(sh(n, 2, 4), randSlice(rng, n*8, -1.5, 1.5))
	tr := mustRun(t, net, in)
	outs := tr.Outputs()
	k := 0
	for _, o := range outs {
		k += o.Len() / n
	}

	// Reverse mode: cotangent direction p is e_p on output component p of
	// every sample, for all layers at once.
	cot := make([]*Tensor, len(outs))
	p0 := 0
	for o, y := range outs {
		per := y.Len() / n
		cot[o] = NewTensor(withP(k, y.Shape), nil)
		for c := 0; c < per; c++ {
			for s := 0; s < n; s++ {
				cot[o].Data[(p0+c)*y.Len()+s*per+c] = 1
			}
		}
		p0 += per
	}
	want := make([]int, len(net.Layers))
	for li, l := range net.Layers {
		want[li] = net.Ops[LayerOp(net, l)].Out
	}
	rev, err := VJP(net, tr, cot, want)
	if err != nil {
		t.Fatal(err)
	}

	for li, l := range net.Layers {
		zid := want[li]
		z := tr.Values[zid]
		rows := z.Len() / l.Out // N times any middle dims
		// Forward mode: direction i is 1 at neuron i of every row.
		seed := NewTensor(withP(l.Out, z.Shape), nil)
		for i := 0; i < l.Out; i++ {
			for r := 0; r < rows; r++ {
				seed.Data[i*z.Len()+r*l.Out+i] = 1
			}
		}
		tans, err := JVP(net, tr, zid, seed)
		if err != nil {
			t.Fatal(err)
		}
		fwd := make([]float64, 0, l.Out*n*k) // [i][n][k]
		for i := 0; i < l.Out; i++ {
			dir := make([]*Tensor, len(tans))
			for o, tt := range tans {
				dir[o] = tt.Batch(i, i+1)
			}
			for _, ys := range perSample(dir, n) {
				fwd = append(fwd, ys...)
			}
		}

		// Reverse: sum the cotangent over the rows of each sample (the
		// bias is shared by them), giving [i][n][k] too.
		g := rev[zid]
		bwd := make([]float64, l.Out*n*k)
		per := rows / n
		for p := 0; p < k; p++ {
			for s := 0; s < n; s++ {
				for r := s * per; r < (s+1)*per; r++ {
					for i := 0; i < l.Out; i++ {
						bwd[(i*n+s)*k+p] += g.Data[p*z.Len()+r*l.Out+i]
					}
				}
			}
		}

		// Finite differences in the bias (a bias-free layer gets a zero one,
		// which leaves the network unchanged).
		fd := make([]float64, 0, l.Out*n*k)
		pert := net.Clone()
		pl := pert.Layers[li]
		if pl.B == nil {
			pl.B = make([]float64, pl.Out)
		}
		for i := 0; i < l.Out; i++ {
			orig := pl.B[i]
			pl.B[i] = orig + fdStep
			yp := perSample(mustRun(t, pert, in).Outputs(), n)
			pl.B[i] = orig - fdStep
			ym := perSample(mustRun(t, pert, in).Outputs(), n)
			pl.B[i] = orig
			for s := 0; s < n; s++ {
				for c := 0; c < k; c++ {
					fd = append(fd, (yp[s][c]-ym[s][c])/(2*fdStep))
				}
			}
		}

		name := l.Name
		checkClose(t, name+" forward vs reverse J", fwd, bwd, 1e-9, 1e-13)
		checkClose(t, name+" forward J vs finite differences", fwd, fd, 1e-6, 1e-8)
		checkClose(t, name+" reverse J vs finite differences", bwd, fd, 1e-6, 1e-8)
		nonzero := 0
		for _, v := range fwd {
			if math.Abs(v) > 1e-6 {
				nonzero++
			}
		}
		if nonzero < len(fwd)/3 { // the last layer only reaches the first output
			t.Errorf("%s: only %d of %d Jacobian entries are non-negligible; the test would prove little", name, nonzero, len(fwd))
		}
	}
}

// TestJVPChunks checks that splitting the tangent directions into chunks
// (as callers do to bound memory) gives the same tangents as one call, and
// that a seed at a value downstream of some ops skips them.
func TestJVPChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	net := mixedNet(rng)
	tr := mustRun(t, net, NewTensor(sh(2, 2, 4), randSlice(rng, 16, -1, 1)))
	zid := net.Ops[LayerOp(net, net.Layers[3])].Out
	z := tr.Values[zid]
	seed := NewTensor(withP(5, z.Shape), randSlice(rng, 5*z.Len(), -1, 1))
	all, err := JVP(net, tr, zid, seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range [][2]int{{0, 2}, {2, 5}} {
		part, err := JVP(net, tr, zid, seed.Batch(ch[0], ch[1]))
		if err != nil {
			t.Fatal(err)
		}
		for o := range part {
			checkClose(t, "chunk", part[o].Data, all[o].Batch(ch[0], ch[1]).Data, 1e-14, 1e-15)
		}
	}
}
