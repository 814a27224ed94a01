package analysis

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

func tn(shape []int, data ...float64) *Tensor { return NewTensor(shape, data) }

func sh(d ...int) []int { return d }

// TestForward checks every op kind's forward pass against values worked
// out by hand (or from the closed form at a few points), including numpy
// broadcasting, both Softmax semantics, the reshape rules and numerically
// extreme inputs.
func TestForward(t *testing.T) {
	e := math.E
	relu := onnxio.Op{Kind: onnxio.OpRelu}
	layer := &onnxio.Layer{Name: "W", Out: 2, In: 3, W: []float64{1, 2, 3, -1, 0, 1}, B: []float64{10, 20}}
	noBias := &onnxio.Layer{Name: "W", Out: 2, In: 3, W: []float64{1, 2, 3, -1, 0, 1}}
	bn := onnxio.Op{Kind: onnxio.OpBatchNorm, Axis: 1, Scale: []float64{1, 2}, Bias: []float64{0, 1},
		Mean: []float64{1, -1}, Var: []float64{3, 0.25}, Eps: 1}
	cases := []struct {
		name  string
		op    onnxio.Op
		ins   []*Tensor
		shape []int
		want  []float64
	}{
		{"relu", relu, []*Tensor{tn(sh(3), -1, 0, 2)}, sh(3), []float64{0, 0, 2}},
		{"identity", onnxio.Op{Kind: onnxio.OpIdentity}, []*Tensor{tn(sh(2), -1, 2)}, sh(2), []float64{-1, 2}},
		{"leakyrelu", onnxio.Op{Kind: onnxio.OpLeakyRelu, Alpha: 0.1}, []*Tensor{tn(sh(2), -2, 3)}, sh(2), []float64{-0.2, 3}},
		{"prelu channel slope", onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Name: "s", Shape: sh(2), Data: []float64{0.1, 0.2}}},
			[]*Tensor{tn(sh(2, 2), -1, 2, -3, -4)}, sh(2, 2), []float64{-0.1, 2, -0.3, -0.8}},
		{"prelu column slope", onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Name: "s", Shape: sh(2, 1), Data: []float64{0.1, 0.2}}},
			[]*Tensor{tn(sh(2, 2), -1, 2, -3, -4)}, sh(2, 2), []float64{-0.1, 2, -0.6, -0.8}},
		{"tanh", onnxio.Op{Kind: onnxio.OpTanh}, []*Tensor{tn(sh(3), 0, 1e3, -1e3)}, sh(3), []float64{0, 1, -1}},
		{"sigmoid", onnxio.Op{Kind: onnxio.OpSigmoid}, []*Tensor{tn(sh(4), 0, 800, -800, 1)}, sh(4), []float64{0.5, 1, 0, 0.7310585786300049}},
		{"hardsigmoid", onnxio.Op{Kind: onnxio.OpHardSigmoid, Alpha: 0.2, Beta: 0.5}, []*Tensor{tn(sh(4), -3, 0, 1, 3)}, sh(4), []float64{0, 0.5, 0.7, 1}},
		{"hardswish", onnxio.Op{Kind: onnxio.OpHardSwish}, []*Tensor{tn(sh(6), -4, -3, 0, 1, 3, 4)}, sh(6), []float64{0, 0, 0, 2.0 / 3, 3, 4}},
		{"elu", onnxio.Op{Kind: onnxio.OpElu, Alpha: 2}, []*Tensor{tn(sh(4), -1, 0, 1, -1e4)}, sh(4), []float64{2 * (1/e - 1), 0, 1, -2}},
		{"selu", onnxio.Op{Kind: onnxio.OpSelu, Alpha: 1.67326, Gamma: 1.0507}, []*Tensor{tn(sh(3), -1, 0, 1)}, sh(3), []float64{-1.1113275400111318, 0, 1.0507}},
		{"softplus", onnxio.Op{Kind: onnxio.OpSoftplus}, []*Tensor{tn(sh(5), 0, 1000, -1000, 1, -1)}, sh(5),
			[]float64{0.6931471805599453, 1000, 0, 1.3132616875182228, 0.31326168751822286}},
		{"gelu erf", onnxio.Op{Kind: onnxio.OpGelu, Approx: "none"}, []*Tensor{tn(sh(4), 0, 1, -1, -40)}, sh(4),
			[]float64{0, 0.8413447460685429, -0.15865525393145707, 0}},
		{"gelu default", onnxio.Op{Kind: onnxio.OpGelu}, []*Tensor{tn(sh(1), 1)}, sh(1), []float64{0.8413447460685429}},
		{"gelu tanh", onnxio.Op{Kind: onnxio.OpGelu, Approx: "tanh"}, []*Tensor{tn(sh(3), 1, -1, 1e200)}, sh(3),
			[]float64{0.8411919906082768, -0.15880800939172324, 1e200}},
		{"erf", onnxio.Op{Kind: onnxio.OpErf}, []*Tensor{tn(sh(3), 0, 0.5, 10)}, sh(3), []float64{0, 0.5204998778130465, 1}},
		{"batchnorm rank 2", bn, []*Tensor{tn(sh(2, 2), 1, -1, 3, 0)}, sh(2, 2),
			// channel 0: (x-1)/2*1+0; channel 1: (x+1)/sqrt(1.25)*2+1
			[]float64{0, 1, 1, 1 + 2/math.Sqrt(1.25)}},
		{"batchnorm rank 3", bn, []*Tensor{tn(sh(1, 2, 2), 1, 3, -1, 0)}, sh(1, 2, 2),
			[]float64{0, 1, 1, 1 + 2/math.Sqrt(1.25)}},
		{"cast float", onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Float}, []*Tensor{tn(sh(1), 0.1)}, sh(1), []float64{0.10000000149011612}},
		{"cast float16", onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Float16}, []*Tensor{tn(sh(1), 1.0/3)}, sh(1), []float64{0.333251953125}},
		{"cast double", onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Double}, []*Tensor{tn(sh(1), 0.1)}, sh(1), []float64{0.1}},
		{"dense rank 2", onnxio.Op{Kind: onnxio.OpDense, Layer: layer}, []*Tensor{tn(sh(1, 3), 1, 1, 2)}, sh(1, 2), []float64{19, 21}},
		{"dense rank 3 no bias", onnxio.Op{Kind: onnxio.OpDense, Layer: noBias}, []*Tensor{tn(sh(2, 1, 3), 1, 1, 2, 0, 1, 0)}, sh(2, 1, 2), []float64{9, 1, 2, 0}},
		{"add same shape", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{tn(sh(2), 1, 2), tn(sh(2), 10, 20)}, sh(2), []float64{11, 22}},
		{"add row bcast", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{tn(sh(2, 3), 1, 2, 3, 4, 5, 6), tn(sh(3), 10, 20, 30)}, sh(2, 3),
			[]float64{11, 22, 33, 14, 25, 36}},
		{"add outer bcast", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{tn(sh(2, 1), 1, 2), tn(sh(1, 3), 10, 20, 30)}, sh(2, 3),
			[]float64{11, 21, 31, 12, 22, 32}},
		{"add rank bcast", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{tn(sh(2, 1, 2), 1, 2, 3, 4), tn(sh(3, 1), 10, 20, 30)}, sh(2, 3, 2),
			[]float64{11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34}},
		{"add scalar const", onnxio.Op{Kind: onnxio.OpAdd, Const: &onnxio.Const{Name: "c", Shape: sh(), Data: []float64{1}}},
			[]*Tensor{tn(sh(2), 1, 2)}, sh(2), []float64{2, 3}},
		{"sub const second", onnxio.Op{Kind: onnxio.OpSub, Const: &onnxio.Const{Name: "c", Shape: sh(2), Data: []float64{1, 2}}},
			[]*Tensor{tn(sh(2, 2), 5, 5, 7, 7)}, sh(2, 2), []float64{4, 3, 6, 5}},
		{"sub const first", onnxio.Op{Kind: onnxio.OpSub, ConstFirst: true, Const: &onnxio.Const{Name: "c", Shape: sh(2), Data: []float64{1, 2}}},
			[]*Tensor{tn(sh(2, 2), 5, 5, 7, 7)}, sh(2, 2), []float64{-4, -3, -6, -5}},
		{"sub const bcast up", onnxio.Op{Kind: onnxio.OpSub, Const: &onnxio.Const{Name: "c", Shape: sh(2, 1, 1), Data: []float64{1, 2}}},
			[]*Tensor{tn(sh(2), 5, 7)}, sh(2, 1, 2), []float64{4, 6, 3, 5}},
		{"mul", onnxio.Op{Kind: onnxio.OpMul}, []*Tensor{tn(sh(2, 2), 1, 2, 3, 4), tn(sh(2, 1), 2, -1)}, sh(2, 2), []float64{2, 4, -3, -4}},
		{"mul self", onnxio.Op{Kind: onnxio.OpMul}, []*Tensor{tn(sh(2), 3, -2)}, sh(2), []float64{9, 4}},
		{"div", onnxio.Op{Kind: onnxio.OpDiv}, []*Tensor{tn(sh(2), 1, 3), tn(sh(1), 2)}, sh(2), []float64{0.5, 1.5}},
		{"div const first", onnxio.Op{Kind: onnxio.OpDiv, ConstFirst: true, Const: &onnxio.Const{Name: "c", Shape: sh(1), Data: []float64{1}}},
			[]*Tensor{tn(sh(3), 2, -4, 0)}, sh(3), []float64{0.5, -0.25, math.Inf(1)}},
		{"softmax opset 13 axis 1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 1, Opset: 13}, []*Tensor{tn(sh(1, 2, 2), 0, 1, 2, 3)}, sh(1, 2, 2),
			[]float64{0.11920292202211757, 0.11920292202211757, 0.8807970779778825, 0.8807970779778825}},
		{"softmax opset 11 axis 1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 1, Opset: 11}, []*Tensor{tn(sh(1, 2, 2), 0, 1, 2, 3)}, sh(1, 2, 2),
			[]float64{0.03205860328008499, 0.08714431874203257, 0.23688281808991016, 0.6439142598879724}},
		{"softmax opset 11 axis -1", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: -1, Opset: 11}, []*Tensor{tn(sh(2, 2), 0, 2, 3, 1)}, sh(2, 2),
			[]float64{0.11920292202211757, 0.8807970779778825, 0.8807970779778825, 0.11920292202211757}},
		{"softmax axis 0", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 0, Opset: 13}, []*Tensor{tn(sh(2, 2), 0, 2, 2, 0)}, sh(2, 2),
			[]float64{0.11920292202211757, 0.8807970779778825, 0.8807970779778825, 0.11920292202211757}},
		{"softmax large", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: -1, Opset: 13}, []*Tensor{tn(sh(2), 1000, 1002)}, sh(2),
			[]float64{0.11920292202211757, 0.8807970779778825}},
		{"logsoftmax large", onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: -1, Opset: 13}, []*Tensor{tn(sh(2), 1000, 1001)}, sh(2),
			[]float64{-1.3132616875182228, -0.3132616875182228}},
		{"logsoftmax opset 11", onnxio.Op{Kind: onnxio.OpLogSoftmax, Axis: 0, Opset: 11}, []*Tensor{tn(sh(2, 1), 0, 1)}, sh(2, 1),
			[]float64{-1.3132616875182228, -0.3132616875182228}},
		{"flatten axis 0", onnxio.Op{Kind: onnxio.OpFlatten, Axis: 0}, []*Tensor{Zeros(2, 3, 4)}, sh(1, 24), make([]float64, 24)},
		{"flatten axis 2", onnxio.Op{Kind: onnxio.OpFlatten, Axis: 2}, []*Tensor{Zeros(2, 3, 4)}, sh(6, 4), make([]float64, 24)},
		{"flatten axis -1", onnxio.Op{Kind: onnxio.OpFlatten, Axis: -1}, []*Tensor{Zeros(2, 3, 4)}, sh(6, 4), make([]float64, 24)},
		{"flatten axis 3", onnxio.Op{Kind: onnxio.OpFlatten, Axis: 3}, []*Tensor{Zeros(2, 3, 4)}, sh(24, 1), make([]float64, 24)},
		{"reshape copy and infer", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{0, -1}}, []*Tensor{tn(sh(2, 1, 2), 1, 2, 3, 4)}, sh(2, 2), []float64{1, 2, 3, 4}},
		{"reshape infer first", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{-1, 2, 1}}, []*Tensor{tn(sh(4), 1, 2, 3, 4)}, sh(2, 2, 1), []float64{1, 2, 3, 4}},
		{"reshape allowzero", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{0, 3}, AllowZero: true}, []*Tensor{Zeros(3, 0)}, sh(0, 3), []float64{}},
		{"squeeze all", onnxio.Op{Kind: onnxio.OpSqueeze}, []*Tensor{tn(sh(1, 2, 1), 1, 2)}, sh(2), []float64{1, 2}},
		{"squeeze negative", onnxio.Op{Kind: onnxio.OpSqueeze, Axes: []int{-1}}, []*Tensor{tn(sh(1, 2, 1), 1, 2)}, sh(1, 2), []float64{1, 2}},
		{"unsqueeze", onnxio.Op{Kind: onnxio.OpUnsqueeze, Axes: []int{0, -1}}, []*Tensor{tn(sh(2), 1, 2)}, sh(1, 2, 1), []float64{1, 2}},
		{"unsqueeze unsorted", onnxio.Op{Kind: onnxio.OpUnsqueeze, Axes: []int{3, 1}}, []*Tensor{tn(sh(2, 1), 1, 2)}, sh(2, 1, 1, 1), []float64{1, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBuilder()
			ids := make([]int, len(c.ins))
			for i := range c.ins {
				ids[i] = b.input("x")
			}
			if c.name == "mul self" {
				ids = []int{ids[0], ids[0]}
			}
			net := b.outputs(b.op(c.op, ids...))
			tr := mustRun(t, net, c.ins...)
			checkTensor(t, "output", tr.Outputs()[0], c.shape, c.want, 1e-14, 1e-15)
		})
	}
}

// TestForwardErrors checks that bad shapes and attributes give errors (not
// panics) that name the op's node.
func TestForwardErrors(t *testing.T) {
	layer := &onnxio.Layer{Name: "W", Out: 2, In: 3, W: make([]float64, 6)}
	cases := []struct {
		name string
		op   onnxio.Op
		ins  []*Tensor
		msg  string
	}{
		{"dense width", onnxio.Op{Kind: onnxio.OpDense, Layer: layer}, []*Tensor{Zeros(2, 4)}, "takes inputs of shape ... x 3"},
		{"dense rank 1", onnxio.Op{Kind: onnxio.OpDense, Layer: layer}, []*Tensor{Zeros(3)}, "takes inputs of shape ... x 3"},
		{"dense bad weights", onnxio.Op{Kind: onnxio.OpDense, Layer: &onnxio.Layer{Name: "W", Out: 2, In: 3, W: make([]float64, 5)}},
			[]*Tensor{Zeros(2, 3)}, "5 weights"},
		{"add bcast", onnxio.Op{Kind: onnxio.OpAdd}, []*Tensor{Zeros(2, 3), Zeros(2)}, "do not broadcast"},
		{"sub const bcast", onnxio.Op{Kind: onnxio.OpSub, Const: &onnxio.Const{Name: "c", Shape: sh(4), Data: make([]float64, 4)}},
			[]*Tensor{Zeros(2, 3)}, "do not broadcast"},
		{"prelu slope", onnxio.Op{Kind: onnxio.OpPRelu, Const: &onnxio.Const{Name: "s", Shape: sh(2, 3), Data: make([]float64, 6)}},
			[]*Tensor{Zeros(3)}, "does not broadcast"},
		{"batchnorm channels", onnxio.Op{Kind: onnxio.OpBatchNorm, Scale: []float64{1}, Bias: []float64{1}, Mean: []float64{1}, Var: []float64{1}},
			[]*Tensor{Zeros(2, 3)}, "3 channels"},
		{"batchnorm rank", onnxio.Op{Kind: onnxio.OpBatchNorm, Scale: []float64{1}, Bias: []float64{1}, Mean: []float64{1}, Var: []float64{1}},
			[]*Tensor{Zeros(1)}, "rank 1"},
		{"softmax axis", onnxio.Op{Kind: onnxio.OpSoftmax, Axis: 2}, []*Tensor{Zeros(2, 3)}, "axis 2 out of range"},
		{"flatten axis", onnxio.Op{Kind: onnxio.OpFlatten, Axis: -3}, []*Tensor{Zeros(2, 3)}, "axis -3 out of range"},
		{"reshape size", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{4, 2}}, []*Tensor{Zeros(2, 3)}, "cannot reshape"},
		{"reshape two -1", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{-1, -1}}, []*Tensor{Zeros(2, 3)}, "more than one -1"},
		{"reshape infer", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{4, -1}}, []*Tensor{Zeros(2, 3)}, "cannot reshape"},
		{"reshape copy rank", onnxio.Op{Kind: onnxio.OpReshape, Shape: []int64{6, 1, 0}}, []*Tensor{Zeros(2, 3)}, "copies dimension 2"},
		{"squeeze non-1", onnxio.Op{Kind: onnxio.OpSqueeze, Axes: []int{0}}, []*Tensor{Zeros(2, 1)}, "dimension is not 1"},
		{"squeeze repeated", onnxio.Op{Kind: onnxio.OpSqueeze, Axes: []int{1, -1}}, []*Tensor{Zeros(2, 1)}, "repeated"},
		{"unsqueeze range", onnxio.Op{Kind: onnxio.OpUnsqueeze, Axes: []int{3}}, []*Tensor{Zeros(2)}, "out of range"},
		{"cast int", onnxio.Op{Kind: onnxio.OpCast, CastTo: onnxio.Int64}, []*Tensor{Zeros(2)}, "only float types"},
		{"gelu approx", onnxio.Op{Kind: onnxio.OpGelu, Approx: "fast"}, []*Tensor{Zeros(2)}, "approximate"},
		{"unknown kind", onnxio.Op{Kind: onnxio.OpKind(99)}, []*Tensor{Zeros(2)}, "unsupported"},
		{"const size", onnxio.Op{Kind: onnxio.OpMul, Const: &onnxio.Const{Name: "c", Shape: sh(3), Data: make([]float64, 2)}},
			[]*Tensor{Zeros(3)}, "2 values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBuilder()
			ids := make([]int, len(c.ins))
			for i := range c.ins {
				ids[i] = b.input("x")
			}
			c.op.Node = "the_node"
			net := b.outputs(b.op(c.op, ids...))
			_, err := Run(net, c.ins)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), `"the_node"`) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not name the node or say %q", err, c.msg)
			}
		})
	}
}

// TestRunInputs checks the input validation: count, declared dims (the
// batch dim is free) and non-evaluable networks.
func TestRunInputs(t *testing.T) {
	b := newBuilder()
	x := b.input("x", 1, 3)
	net := b.outputs(b.op(onnxio.Op{Kind: onnxio.OpRelu}, x))
	if _, err := Run(net, []*Tensor{Zeros(5, 3)}); err != nil {
		t.Errorf("batch 5 for a declared batch of 1: %v", err)
	}
	for _, in := range [][]*Tensor{{Zeros(5, 4)}, {Zeros(3)}, {}, {nil}, {{Shape: sh(2), Data: make([]float64, 3)}}} {
		if _, err := Run(net, in); err == nil {
			t.Errorf("inputs %v: no error", in)
		}
	}
	net.Evaluable, net.Reason = false, "op Foo is not supported"
	if _, err := Run(net, []*Tensor{Zeros(1, 3)}); err == nil || !strings.Contains(err.Error(), "Foo") {
		t.Errorf("non-evaluable network: error %v", err)
	}
}

// TestRunFrom checks that re-running from a changed layer's op gives the
// same result as a full run of the changed network, and leaves the
// original trace alone.
func TestRunFrom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := newBuilder()
	x := b.input("x", -1, 3)
	h := b.op(onnxio.Op{Kind: onnxio.OpTanh}, b.dense(x, 4, 3, randSlice(rng, 12, -1, 1), randSlice(rng, 4, -1, 1)))
	z := b.dense(h, 2, 4, randSlice(rng, 8, -1, 1), randSlice(rng, 2, -1, 1))
	net := b.outputs(b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, z), h)
	in := NewTensor(sh(5, 3), randSlice(rng, 15, -2, 2))
	tr := mustRun(t, net, in)
	before := tr.Outputs()[0].Clone()

	pruned := net.Clone()
	l := pruned.Layers[1]
	l.W[3] = 0
	l.B[1] += 0.5
	start := LayerOp(pruned, l)
	if start != 2 {
		t.Fatalf("LayerOp = %d, want 2", start)
	}
	got, err := RunFrom(pruned, tr, start)
	if err != nil {
		t.Fatal(err)
	}
	want := mustRun(t, pruned, in)
	for i := range want.Values {
		checkTensor(t, "value", got.Values[i], want.Values[i].Shape, want.Values[i].Data, 0, 0)
	}
	checkClose(t, "original trace", tr.Outputs()[0].Data, before.Data, 0, 0)
	if got.Values[h] != tr.Values[h] {
		t.Error("RunFrom recomputed a value before start")
	}
	if LayerOp(net, &onnxio.Layer{}) != -1 {
		t.Error("LayerOp of a foreign layer")
	}
	if _, err := RunFrom(pruned, tr, len(pruned.Ops)+1); err == nil {
		t.Error("RunFrom past the end: no error")
	}
}
