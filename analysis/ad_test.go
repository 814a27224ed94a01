package analysis

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

const fdStep = 1e-6

// fdJacobian is the central finite-difference Jacobian of net's output
// values (all outputs concatenated) with respect to input i, as
// J[k*n+j] = dy_k/dx_j with n the input's size.
func fdJacobian(t *testing.T, net *onnxio.Network, ins []*Tensor, i int) []float64 {
	t.Helper()
	x := ins[i].Data
	var jac []float64
	m := 0
	for j := range x {
		orig := x[j]
		x[j] = orig + fdStep
		yp := concatOutputs(mustRun(t, net, ins...))
		x[j] = orig - fdStep
		ym := concatOutputs(mustRun(t, net, ins...))
		x[j] = orig
		if jac == nil {
			m = len(yp)
			jac = make([]float64, m*len(x))
		}
		for k := range yp {
			jac[k*len(x)+j] = (yp[k] - ym[k]) / (2 * fdStep)
		}
	}
	return jac
}

func concatOutputs(tr *Trace) []float64 {
	var y []float64
	for _, o := range tr.Outputs() {
		y = append(y, o.Data...)
	}
	return y
}

// identitySeed is [n, shape...] with direction j the unit vector e_j.
func identitySeed(shape []int) *Tensor {
	n := ShapeSize(shape)
	s := NewTensor(withP(n, shape), nil)
	for j := 0; j < n; j++ {
		s.Data[j*n+j] = 1
	}
	return s
}

// adJacobians returns the Jacobian of all outputs w.r.t. input value id
// (size n) computed by JVP (identity seed) and by VJP (identity output
// cotangents), both laid out as J[k*n+j].
func adJacobians(t *testing.T, net *onnxio.Network, tr *Trace, id int) (fwd, rev []float64) {
	t.Helper()
	n := tr.Values[id].Len()
	tans, err := JVP(net, tr, id, identitySeed(tr.Values[id].Shape))
	if err != nil {
		t.Fatalf("JVP: %v", err)
	}
	outs := tr.Outputs()
	m := 0
	for _, o := range outs {
		m += o.Len()
	}
	fwd = make([]float64, m*n)
	rev = make([]float64, m*n)
	k0 := 0
	for o, y := range outs {
		yl := y.Len()
		if !SameShape(tans[o].Shape, withP(n, y.Shape)) {
			t.Fatalf("JVP output %d shape %v, want [%d %v]", o, tans[o].Shape, n, y.Shape)
		}
		for j := 0; j < n; j++ {
			for k := 0; k < yl; k++ {
				fwd[(k0+k)*n+j] = tans[o].Data[j*yl+k]
			}
		}
		// Reverse: one VJP per output, cotangent identity on it, zero (nil)
		// on the others.
		cot := make([]*Tensor, len(outs))
		cot[o] = identitySeed(y.Shape)
		res, err := VJP(net, tr, cot, []int{id})
		if err != nil {
			t.Fatalf("VJP: %v", err)
		}
		g := res[id]
		if !SameShape(g.Shape, withP(yl, tr.Values[id].Shape)) {
			t.Fatalf("VJP shape %v, want [%d %v]", g.Shape, yl, tr.Values[id].Shape)
		}
		copy(rev[k0*n:], g.Data)
		k0 += yl
	}
	return fwd, rev
}

// TestOpDerivatives checks the JVP and VJP of every op kind against central
// finite differences, w.r.t. every variable operand, on random inputs kept
// away from kinks; and that forward and reverse mode agree to rounding.
func TestOpDerivatives(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	r := func(lo, hi float64, shape ...int) *Tensor {
		return NewTensor(shape, randSlice(rng, ShapeSize(shape), lo, hi))
	}
	away := func(gap float64, kinks []float64, shape ...int) *Tensor {
		return NewTensor(shape, randAway(rng, ShapeSize(shape), -4, 4, gap, kinks...))
	}
	nonzero := func(shape ...int) *Tensor { return NewTensor(shape, randAway(rng, ShapeSize(shape), -2, 2, 0.5, 0)) }
	k0 := []float64{0}
	layer := func(out, in int, bias bool) *onnxio.Layer {
		l := &onnxio.Layer{Name: "W", Out: out, In: in, W: randSlice(rng, out*in, -1, 1)}
		if bias {
			l.B = randSlice(rng, out, -1, 1)
		}
		return l
	}
	cst := func(shape ...int) *onnxio.Const {
		return &onnxio.Const{Name: "c", Shape: shape, Data: randAway(rng, ShapeSize(shape), -2, 2, 0.5, 0)}
	}
	bn := onnxio.Op{Kind: onnxio.OpBatchNorm, Axis: 1, Scale: []float64{1.5, -0.5, 2}, Bias: []float64{0.1, 0.2, -0.3},
		Mean: []float64{0.3, -0.2, 0}, Var: []float64{0.5, 2, 1}, Eps: 1e-5}
	cases := []struct {
		name string
		op   onnxio.Op
		ins  []*Tensor
		self bool // one input used as both operands
	}{
		{"dense", onnxio.Op{Kind: onnxio.OpDense, Layer: layer(3, 4, true)}, []*Tensor{r(-2, 2, 2, 4)}, false},
		{"dense rank 3 no bias", onnxio.Op{Kind: onnxio.OpDense, Layer: layer(3, 2, false)}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"identity", onnxio.Op{Kind: onnxio.OpIdentity}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"cast double", onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Double}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"relu", onnxio.Op{Kind: onnxio.OpRelu}, []*Tensor{away(0.01, k0, 2, 5)}, false},
		{"leakyrelu", onnxio.Op{Kind: onnxio.OpLeakyRelu, Alpha: 0.1}, []*Tensor{away(0.01, k0, 2, 5)}, false},
		{"prelu", onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Name: "s", Shape: sh(3), Data: []float64{0.1, -0.2, 0.3}}},
			[]*Tensor{away(0.01, k0, 2, 3)}, false},
		{"prelu column", onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Name: "s", Shape: sh(2, 1), Data: []float64{0.1, 0.3}}},
			[]*Tensor{away(0.01, k0, 2, 3)}, false},
		{"tanh", onnxio.Op{Kind: onnxio.OpTanh}, []*Tensor{r(-3, 3, 2, 5)}, false},
		{"sigmoid", onnxio.Op{Kind: onnxio.OpSigmoid}, []*Tensor{r(-6, 6, 2, 5)}, false},
		{"hardsigmoid", onnxio.Op{Kind: onnxio.OpHardSigmoid, Alpha: 0.2, Beta: 0.5}, []*Tensor{away(0.01, []float64{-2.5, 2.5}, 3, 5)}, false},
		{"hardswish", onnxio.Op{Kind: onnxio.OpHardSwish}, []*Tensor{away(0.01, []float64{-3, 3}, 3, 5)}, false},
		{"elu", onnxio.Op{Kind: onnxio.OpElu, Alpha: 1.3}, []*Tensor{away(0.01, k0, 2, 5)}, false},
		{"selu", onnxio.Op{Kind: onnxio.OpSelu, Alpha: 1.67326, Gamma: 1.0507}, []*Tensor{away(0.01, k0, 2, 5)}, false},
		{"softplus", onnxio.Op{Kind: onnxio.OpSoftplus}, []*Tensor{r(-6, 6, 2, 5)}, false},
		{"gelu erf", onnxio.Op{Kind: onnxio.OpGelu}, []*Tensor{r(-4, 4, 2, 5)}, false},
		{"gelu tanh", onnxio.Op{Kind: onnxio.OpGelu, Approx: "tanh"}, []*Tensor{r(-4, 4, 2, 5)}, false},
		{"erf", onnxio.Op{Kind: onnxio.OpErf}, []*Tensor{r(-2, 2, 2, 5)}, false},
		{"batchnorm rank 2", bn, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"batchnorm rank 4", bn, []*Tensor{r(-2, 2, 2, 3, 2, 2)}, false},
		{"add", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{r(-2, 2, 2, 3), r(-2, 2, 2, 3)}, false},
		{"add bcast row", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{r(-2, 2, 2, 3), r(-2, 2, 3)}, false},
		{"sub bcast outer", onnxio.Op{Kind: onnxio.OpSub}, []*Tensor{r(-2, 2, 2, 1), r(-2, 2, 1, 3)}, false},
		{"sub const first", onnxio.Op{Kind: onnxio.OpSub, Const: cst(3), ConstFirst: true}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"sub const bcast up", onnxio.Op{Kind: onnxio.OpSub, Const: cst(2, 1, 1)}, []*Tensor{r(-2, 2, 3)}, false},
		{"mul", onnxio.Op{Kind: onnxio.OpMul}, []*Tensor{r(-2, 2, 2, 3), r(-2, 2, 2, 3)}, false},
		{"mul bcast rank", onnxio.Op{Kind: onnxio.OpMul}, []*Tensor{r(-2, 2, 2, 1, 3), r(-2, 2, 2, 1)}, false},
		{"mul self", onnxio.Op{Kind: onnxio.OpMul}, []*Tensor{r(-2, 2, 2, 3)}, true},
		{"mul const", onnxio.Op{Kind: onnxio.OpMul, Const: cst(1)}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"div", onnxio.Op{Kind: onnxio.OpDiv}, []*Tensor{r(-2, 2, 2, 3), nonzero(2, 3)}, false},
		{"div bcast", onnxio.Op{Kind: onnxio.OpDiv}, []*Tensor{r(-2, 2, 3), nonzero(2, 1)}, false},
		{"div self", onnxio.Op{Kind: onnxio.OpDiv}, []*Tensor{nonzero(4)}, true},
		{"div const first", onnxio.Op{Kind: onnxio.OpDiv, Const: cst(3), ConstFirst: true}, []*Tensor{nonzero(2, 3)}, false},
		{"div const", onnxio.Op{Kind: onnxio.OpDiv, Const: cst(2, 1)}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"softmax 13 axis 1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 1, Opset: 13}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"softmax 11 axis 1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 1, Opset: 11}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"softmax 13 axis 0", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 0, Opset: 13}, []*Tensor{r(-2, 2, 2, 3)}, false},
		{"softmax 13 axis -1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: -1, Opset: 13}, []*Tensor{r(-2, 2, 2, 2, 3)}, false},
		{"logsoftmax 13 axis 1", onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: 1, Opset: 13}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"logsoftmax 11 axis 1", onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: 1, Opset: 11}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"logsoftmax 11 axis -2", onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: -2, Opset: 11}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"flatten", onnxio.Op{Kind: onnxio.OpFlatten, Axis: 2}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"reshape", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{0, -1, 3}}, []*Tensor{r(-2, 2, 2, 3, 2)}, false},
		{"squeeze", onnxio.Op{Kind: onnxio.OpSqueeze, Axes: []int{-2}}, []*Tensor{r(-2, 2, 2, 1, 3)}, false},
		{"unsqueeze", onnxio.Op{Kind: onnxio.OpUnsqueeze, Axes: []int{1, -1}}, []*Tensor{r(-2, 2, 2, 3)}, false},
	}
	covered := map[onnxio.OpKind]bool{}
	for _, c := range cases {
		covered[c.op.Kind] = true
		t.Run(c.name, func(t *testing.T) {
			b := newBuilder()
			ids := make([]int, len(c.ins))
			for i := range c.ins {
				ids[i] = b.input("x")
			}
			opIns := ids
			if c.self {
				opIns = []int{ids[0], ids[0]}
			}
			net := b.outputs(b.op(c.op, opIns...))
			tr := mustRun(t, net, c.ins...)
			for i, id := range ids {
				fd := fdJacobian(t, net, c.ins, i)
				fwd, rev := adJacobians(t, net, tr, id)
				checkClose(t, "JVP vs finite differences", fwd, fd, 1e-6, 1e-8)
				checkClose(t, "VJP vs finite differences", rev, fd, 1e-6, 1e-8)
				checkClose(t, "JVP vs VJP", fwd, rev, 1e-12, 1e-15)
			}
		})
	}
	for k := onnxio.OpDense; k <= onnxio.OpUnsqueeze; k++ {
		if !covered[k] {
			t.Errorf("no derivative test for %s", k)
		}
	}
}

// TestCastStraightThrough checks that a rounding Cast passes derivatives
// through unchanged (finite differences would see the rounding steps).
func TestCastStraightThrough(t *testing.T) {
	b := newBuilder()
	x := b.input("x")
	net := b.outputs(b.op(onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Float16}, x))
	tr := mustRun(t, net, tn(sh(3), 0.1, 0.2, 0.3))
	fwd, rev := adJacobians(t, net, tr, x)
	want := []float64{1, 0, 0, 0, 1, 0, 0, 0, 1}
	checkClose(t, "JVP", fwd, want, 0, 0)
	checkClose(t, "VJP", rev, want, 0, 0)
}

// TestSaturatedDerivatives checks that derivatives stay finite (0 or the
// limit slope) where the functions saturate, instead of inf*0 = NaN.
func TestSaturatedDerivatives(t *testing.T) {
	xs := []float64{-1e300, -800, 800, 1e300}
	for _, c := range []struct {
		op   onnxio.Op
		want []float64
	}{
		{onnxio.Op{Kind: onnxio.OpSigmoid}, []float64{0, 0, 0, 0}},
		{onnxio.Op{Kind: onnxio.OpTanh}, []float64{0, 0, 0, 0}},
		{onnxio.Op{Kind: onnxio.OpSoftplus}, []float64{0, 0, 1, 1}},
		{onnxio.Op{Kind: onnxio.OpGelu}, []float64{0, 0, 1, 1}},
		{onnxio.Op{Kind: onnxio.OpGelu, Approx: "tanh"}, []float64{0, 0, 1, 1}},
		{onnxio.Op{Kind: onnxio.OpErf}, []float64{0, 0, 0, 0}},
		{onnxio.Op{Kind: onnxio.OpElu, Alpha: 1}, []float64{0, 0, 1, 1}},
		{onnxio.Op{Kind: onnxio.OpSelu, Alpha: 1.6, Gamma: 1.05}, []float64{0, 0, 1.05, 1.05}},
		{onnxio.Op{Kind: onnxio.OpHardSwish}, []float64{0, 0, 1, 1}},
	} {
		y := make([]float64, len(xs))
		d := make([]float64, len(xs))
		unaryForward(&c.op, xs, y)
		unaryDeriv(&c.op, xs, y, d)
		for i := range y {
			if math.IsNaN(y[i]) || d[i] != c.want[i] {
				t.Errorf("%s at %g: f = %g, f' = %g, want f' = %g", c.op.Kind, xs[i], y[i], d[i], c.want[i])
			}
		}
	}
}

// TestADErrors checks argument validation of JVP and VJP.
func TestADErrors(t *testing.T) {
	b := newBuilder()
	x := b.input("x")
	y := b.op(onnxio.Op{Kind: onnxio.OpTanh}, x)
	net := b.outputs(y, x)
	tr := mustRun(t, net, Zeros(2, 3))
	for _, c := range []struct {
		name string
		err  func() error
		msg  string
	}{
		{"seed shape", func() error { _, err := JVP(net, tr, x, Zeros(4, 3, 2)); return err }, "seed shape"},
		{"seed nil", func() error { _, err := JVP(net, tr, x, nil); return err }, "seed shape"},
		{"from range", func() error { _, err := JVP(net, tr, 9, Zeros(1, 2, 3)); return err }, "not in the trace"},
		{"cot count", func() error { _, err := VJP(net, tr, []*Tensor{Zeros(1, 2, 3)}, []int{x}); return err }, "1 output cotangents"},
		{"cot all nil", func() error { _, err := VJP(net, tr, []*Tensor{nil, nil}, []int{x}); return err }, "nil"},
		{"cot P", func() error { _, err := VJP(net, tr, []*Tensor{Zeros(1, 2, 3), Zeros(2, 2, 3)}, []int{x}); return err }, "one P"},
		{"cot shape", func() error { _, err := VJP(net, tr, []*Tensor{Zeros(1, 3, 2), nil}, []int{x}); return err }, "want P x"},
		{"want range", func() error { _, err := VJP(net, tr, []*Tensor{Zeros(1, 2, 3), nil}, []int{-1}); return err }, "not in the trace"},
	} {
		err := c.err()
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.msg)
		}
	}
}

// TestADAliasing checks the ownership rules: JVP never returns the seed's
// storage, outputs that share data internally come back separate, VJP
// does not modify the caller's cotangents, and a wanted value's cotangent
// is not disturbed by further accumulation upstream.
func TestADAliasing(t *testing.T) {
	b := newBuilder()
	x := b.input("x")
	r := b.op(onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{-1}}, x)
	f := b.op(onnxio.Op{Kind: onnxio.OpFlatten, Axis: 0}, r)
	net := b.outputs(x, r, f)
	tr := mustRun(t, net, tn(sh(2), 1, 2))
	seed := identitySeed(sh(2))
	tans, err := JVP(net, tr, x, seed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range tans {
		tans[i].Data[0] = 100 + float64(i)
	}
	if seed.Data[0] != 1 || tans[0].Data[0] != 100 || tans[1].Data[0] != 101 {
		t.Errorf("returned tangents share storage: seed %v, tangents %v %v", seed.Data, tans[0].Data, tans[1].Data)
	}

	// Cotangent of r is wanted; the reshape back to x must not alias it.
	cot := []*Tensor{nil, tn(sh(1, 2), 1, 2), tn(sh(1, 1, 2), 10, 20)}
	res, err := VJP(net, tr, cot, []int{r, x})
	if err != nil {
		t.Fatal(err)
	}
	checkTensor(t, "cot r", res[r], sh(1, 2), []float64{11, 22}, 0, 0)
	checkTensor(t, "cot x", res[x], sh(1, 2), []float64{11, 22}, 0, 0)
	res[x].Data[0] = -1
	if res[r].Data[0] != 11 || cot[1].Data[0] != 1 || cot[2].Data[0] != 10 {
		t.Error("VJP results share storage with each other or modified the caller's cotangents")
	}
}
