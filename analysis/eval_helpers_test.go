package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// near reports |got-want| <= rel*|want| + abs (NaNs must match).
func near(got, want, rel, abs float64) bool {
	if math.IsNaN(want) || math.IsNaN(got) {
		return math.IsNaN(want) && math.IsNaN(got)
	}
	if math.IsInf(want, 0) || math.IsInf(got, 0) {
		return got == want
	}
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

// checkClose fails t with the first few mismatching elements.
func checkClose(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	checkEach(t, what, got, want, func(i int) (bool, string) {
		return near(got[i], want[i], rel, abs), fmt.Sprintf("rel %g, abs %g", rel, abs)
	})
}

// checkEach fails t with the first few elements ok rejects (ok also says
// what the comparison was).
func checkEach(t *testing.T, what string, got, want []float64, ok func(i int) (bool, string)) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if good, detail := ok(i); !good {
			if bad < 5 {
				t.Errorf("%s[%d] = %.17g, want %.17g (diff %.3g, %s)", what, i, got[i], want[i], got[i]-want[i], detail)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
}

// checkTensor compares shape and data.
func checkTensor(t *testing.T, what string, got *Tensor, wantShape []int, want []float64, rel, abs float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: nil tensor", what)
		return
	}
	if !SameShape(got.Shape, wantShape) {
		t.Errorf("%s: shape %v, want %v", what, got.Shape, wantShape)
		return
	}
	checkClose(t, what, got.Data, want, rel, abs)
}

// builder assembles networks by hand (Extract is tested elsewhere).
type builder struct{ net *onnxio.Network }

func newBuilder() *builder {
	return &builder{net: &onnxio.Network{Evaluable: true, Opset: 17}}
}

func (b *builder) value(name string) int {
	b.net.Values = append(b.net.Values, onnxio.Value{Name: name})
	return len(b.net.Values) - 1
}

// input declares a graph input; shape nil leaves it unchecked.
func (b *builder) input(name string, shape ...int64) int {
	id := b.value(name)
	b.net.Inputs = append(b.net.Inputs, onnxio.Input{Name: name, Value: id, Shape: shape, ElemType: onnxio.Float})
	return id
}

// op appends op reading ins and returns its new output value.
func (b *builder) op(op onnxio.Op, ins ...int) int {
	op.In = ins
	if op.Node == "" {
		op.Node = fmt.Sprintf("%s_%d", op.Kind, len(b.net.Ops))
	}
	op.Out = b.value(op.Node + "_out")
	b.net.Ops = append(b.net.Ops, op)
	return op.Out
}

// dense appends a Dense layer with the given weights ([out, in]) and bias
// (nil: none).
func (b *builder) dense(x, out, in int, w, bias []float64) int {
	l := &onnxio.Layer{Index: len(b.net.Layers), Name: fmt.Sprintf("W%d", len(b.net.Layers)), Out: out, In: in,
		W: w, B: bias, Prunable: true, TransposeIdx: -1, AddIdx: -1}
	b.net.Layers = append(b.net.Layers, l)
	return b.op(onnxio.Op{Kind: onnxio.OpDense, Layer: l, Node: "dense_" + l.Name}, x)
}

func (b *builder) outputs(ids ...int) *onnxio.Network {
	b.net.Outputs = ids
	return b.net
}

// randSlice draws n values uniform in [lo, hi).
func randSlice(rng *rand.Rand, n int, lo, hi float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = lo + (hi-lo)*rng.Float64()
	}
	return v
}

// randAway draws n values uniform in [lo, hi) at least gap away from every
// kink, so finite differences do not straddle one.
func randAway(rng *rand.Rand, n int, lo, hi, gap float64, kinks ...float64) []float64 {
	v := make([]float64, n)
	for i := range v {
	again:
		x := lo + (hi-lo)*rng.Float64()
		for _, k := range kinks {
			if math.Abs(x-k) < gap {
				goto again
			}
		}
		v[i] = x
	}
	return v
}

// mustRun runs net or fails the test.
func mustRun(t *testing.T, net *onnxio.Network, ins ...*Tensor) *Trace {
	t.Helper()
	tr, err := Run(net, ins)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return tr
}
