package analysis

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/onnxtestdata"
)

// mathVectorGroups are the ONNX node tests of the elementwise math and
// reduction kernels; the skips exclude other ops sharing a prefix and
// integer tensors.
var mathVectorGroups = []familyVectors{
	{"test_sqrt", nil, nil, false},
	{"test_exp", nil, []string{"expand"}, false},
	{"test_log", nil, []string{"softmax"}, false},
	{"test_abs", nil, nil, false},
	{"test_reciprocal", nil, nil, false},
	{"test_sin", nil, nil, false},
	{"test_cos", nil, nil, false},
	{"test_tan", nil, []string{"tanh"}, false},
	{"test_atan", nil, nil, false},
	{"test_asin", nil, nil, false},
	{"test_acos", nil, nil, false},
	{"test_floor", nil, nil, false},
	{"test_ceil", nil, nil, false},
	{"test_round", nil, nil, false},
	{"test_sign", nil, nil, false},
	{"test_softsign", nil, nil, false},
	{"test_celu", nil, nil, false},
	{"test_thresholdedrelu", nil, nil, false},
	{"test_prelu", nil, nil, false}, // the slope a graph input: a computed slope
	{"test_pow", [][]int{{}, {1}}, []string{"types"}, false},
	{"test_pow_types_float32_int", [][]int{{1}}, nil, false}, // an integer exponent, bound
	{"test_clip", [][]int{{}, {1, 2}}, []string{"int8"}, false},
	{"test_max_", [][]int{{}, {1}}, []string{"int"}, false},
	{"test_min_", [][]int{{}, {1}}, []string{"int"}, false},
	{"test_sum_", nil, nil, false},
	{"test_mean_", nil, nil, false},
	{"test_reduce_", [][]int{{1}}, []string{"empty_axes"}, false},
	{"test_reduce_sum_empty_axes", [][]int{{1}}, nil, false},
}

func TestOperatorVectorsMath(t *testing.T) {
	runVectorGroups(t, mathVectorGroups)
}

// familyVectors is a group of ONNX node tests: a name prefix, the input
// positions bound as constants per variant (nil: none), name parts that
// exclude a case, and whether the group may be absent from the installed
// release of the data.
type familyVectors struct {
	prefix   string
	bind     [][]int
	skip     []string
	optional bool
}

// runVectorGroups runs every case of the groups; a bound position that the
// case's model does not have is dropped from the binding.
func runVectorGroups(t *testing.T, groups []familyVectors) {
	onnxtestdata.Require(t)
	for _, g := range groups {
		cases, err := onnxtestdata.Cases(g.prefix)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
	next:
		for _, c := range cases {
			if strings.HasSuffix(c.Name, "_expanded") {
				continue
			}
			for _, s := range g.skip {
				if strings.Contains(c.Name, s) {
					continue next
				}
			}
			found++
			binds := g.bind
			if binds == nil {
				binds = [][]int{{}}
			}
			for _, bind := range binds {
				var b []int
				if len(c.Sets) > 0 {
					for _, p := range bind {
						if p < len(c.Sets[0].Inputs) {
							b = append(b, p)
						}
					}
				}
				name := c.Name
				if len(binds) > 1 {
					name = fmt.Sprintf("%s/const%v", c.Name, b)
				}
				t.Run(name, func(t *testing.T) { runVector(t, c, b) })
			}
		}
		if found == 0 && !g.optional {
			t.Errorf("no vector case for %s", g.prefix)
		}
	}
}

func TestMathKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pos := func(shape ...int) *Tensor { return randTensor(rng, 0.3, 2, shape...) }
	any := func(shape ...int) *Tensor { return randTensor(rng, -2, 2, shape...) }
	unit := func(shape ...int) *Tensor { return randTensor(rng, -0.9, 0.9, shape...) }
	op := func(typ string) onnxio.Op { return onnxio.Op{Type: typ} }
	withF := func(typ, name string, v float64) onnxio.Op {
		return onnxio.Op{Type: typ, Attrs: map[string]onnxio.AttrValue{name: {Kind: onnxio.AttrIsFloat, Float: v}}}
	}
	scalar := func(v float64) *Tensor { return NewTensor([]int{}, []float64{v}) }
	cases := []kernelCase{
		{Name: "Sqrt", Op: op("Sqrt"), Ins: []*Tensor{pos(3, 4)}, Diff: []int{0}},
		{Name: "Exp", Op: op("Exp"), Ins: []*Tensor{any(3, 4)}, Diff: []int{0}},
		{Name: "Log", Op: op("Log"), Ins: []*Tensor{pos(3, 4)}, Diff: []int{0}},
		{Name: "Abs", Op: op("Abs"), Ins: []*Tensor{any(5)}, Diff: []int{0}},
		{Name: "Reciprocal", Op: op("Reciprocal"), Ins: []*Tensor{pos(2, 3)}, Diff: []int{0}},
		{Name: "Sin", Op: op("Sin"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Cos", Op: op("Cos"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Tan", Op: op("Tan"), Ins: []*Tensor{unit(7)}, Diff: []int{0}},
		{Name: "Sinh", Op: op("Sinh"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Cosh", Op: op("Cosh"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Atan", Op: op("Atan"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Asin", Op: op("Asin"), Ins: []*Tensor{unit(7)}, Diff: []int{0}},
		{Name: "Acos", Op: op("Acos"), Ins: []*Tensor{unit(7)}, Diff: []int{0}},
		{Name: "Asinh", Op: op("Asinh"), Ins: []*Tensor{any(7)}, Diff: []int{0}},
		{Name: "Acosh", Op: op("Acosh"), Ins: []*Tensor{randTensor(rng, 1.2, 3, 7)}, Diff: []int{0}},
		{Name: "Atanh", Op: op("Atanh"), Ins: []*Tensor{unit(7)}, Diff: []int{0}},
		{Name: "Floor", Op: op("Floor"), Ins: []*Tensor{NewTensor([]int{3}, []float64{-1.5, 0.3, 2.7})}, Diff: []int{0}},
		{Name: "Ceil", Op: op("Ceil"), Ins: []*Tensor{NewTensor([]int{3}, []float64{-1.5, 0.3, 2.7})}, Diff: []int{0}},
		{Name: "Round", Op: op("Round"), Ins: []*Tensor{NewTensor([]int{3}, []float64{-1.3, 0.3, 2.7})}, Diff: []int{0}},
		{Name: "Sign", Op: op("Sign"), Ins: []*Tensor{NewTensor([]int{3}, []float64{-1.5, 0.3, 2.7})}, Diff: []int{0}},
		{Name: "Softsign", Op: op("Softsign"), Ins: []*Tensor{any(3, 5)}, Diff: []int{0}},
		{Name: "Mish", Op: op("Mish"), Ins: []*Tensor{any(3, 5)}, Diff: []int{0}},
		{Name: "Celu", Op: withF("Celu", "alpha", 0.7), Ins: []*Tensor{any(3, 5)}, Diff: []int{0}},
		{Name: "ThresholdedRelu", Op: withF("ThresholdedRelu", "alpha", 0.5), Ins: []*Tensor{NewTensor([]int{4}, []float64{-1, 0.2, 0.7, 2})}, Diff: []int{0}},
		{Name: "Swish", Op: withF("Swish", "alpha", 1.5), Ins: []*Tensor{any(3, 5)}, Diff: []int{0}},

		{Name: "Pow x^2", Op: op("Pow"), Ins: []*Tensor{any(2, 3, 4), scalar(2)}, Diff: []int{0}},
		{Name: "Pow x^0.5", Op: op("Pow"), Ins: []*Tensor{pos(2, 3), scalar(0.5)}, Diff: []int{0}},
		{Name: "Pow x^-1.5", Op: op("Pow"), Ins: []*Tensor{pos(2, 3), scalar(-1.5)}, Diff: []int{0}},
		{Name: "Pow both broadcast", Op: op("Pow"), Ins: []*Tensor{pos(2, 1, 4), randTensor(rng, -1, 3, 3, 1)}, Diff: []int{0, 1}},
		{Name: "Pow exponent only", Op: op("Pow"), Ins: []*Tensor{pos(4), any(2, 4)}, Diff: []int{1}},

		{Name: "Clip inputs", Op: onnxio.Op{Type: "Clip", Opset: 13}, Ins: []*Tensor{NewTensor([]int{5}, []float64{-2, -0.5, 0.1, 0.9, 3}), scalar(0), scalar(1)}, Diff: []int{0}},
		{Name: "Clip wrt the bounds", Op: onnxio.Op{Type: "Clip", Opset: 13}, Ins: []*Tensor{NewTensor([]int{5}, []float64{-2, -0.5, 0.1, 0.9, 3}), scalar(0), scalar(1)}, Diff: []int{0, 1, 2}},
		{Name: "Clip min above max", Op: onnxio.Op{Type: "Clip", Opset: 13}, Ins: []*Tensor{NewTensor([]int{3}, []float64{-2, 0.5, 3}), scalar(1), scalar(0)}, Diff: []int{0, 1, 2}},
		{Name: "Clip max only (ReLU6 as min 0 max 6)", Op: onnxio.Op{Type: "Clip", Opset: 13}, Ins: []*Tensor{NewTensor([]int{4}, []float64{-2, 0.5, 5.5, 7}), nil, scalar(6)}, Diff: []int{0}},
		{Name: "Clip attributes", Op: onnxio.Op{Type: "Clip", Opset: 6, Attrs: map[string]onnxio.AttrValue{
			"min": {Kind: onnxio.AttrIsFloat, Float: 0}, "max": {Kind: onnxio.AttrIsFloat, Float: 6}}},
			Ins: []*Tensor{NewTensor([]int{4}, []float64{-2, 0.5, 5.5, 7})}, Diff: []int{0}},

		{Name: "PRelu computed slope", Op: op("PRelu"), Ins: []*Tensor{NewTensor([]int{2, 3}, []float64{-1, 0.5, -0.2, 2, -3, 0.1}), any(3)}, Diff: []int{0, 1}},
		{Name: "Sum three broadcast", Op: op("Sum"), Ins: []*Tensor{any(2, 3), any(3), any(2, 1)}, Diff: []int{0, 1, 2}},
		{Name: "Mean two", Op: op("Mean"), Ins: []*Tensor{any(2, 3), any(1, 3)}, Diff: []int{0, 1}},
		{Name: "Max three", Op: op("Max"), Ins: []*Tensor{any(2, 3), any(3), any(2, 1)}, Diff: []int{0, 1, 2}},
		{Name: "Min two", Op: op("Min"), Ins: []*Tensor{any(4, 3), any(4, 3)}, Diff: []int{0, 1}},
		{Name: "Max one", Op: op("Max"), Ins: []*Tensor{any(4)}, Diff: []int{0}},
	}
	axes := func(typ string, keep int64, a ...int64) onnxio.Op {
		o := onnxio.Op{Type: typ, Attrs: map[string]onnxio.AttrValue{"keepdims": {Kind: onnxio.AttrIsInt, Int: keep}}}
		if a != nil {
			o.Attrs["axes"] = onnxio.AttrValue{Kind: onnxio.AttrIsInts, Ints: a}
		}
		return o
	}
	for _, typ := range []string{"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
		"ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"} {
		x := func(shape ...int) *Tensor {
			if typ == "ReduceLogSum" {
				return pos(shape...)
			}
			return any(shape...)
		}
		cases = append(cases,
			kernelCase{Name: typ + " last axis", Op: axes(typ, 1, -1), Ins: []*Tensor{x(2, 3, 5)}, Diff: []int{0}},
			kernelCase{Name: typ + " middle axes no keepdims", Op: axes(typ, 0, 1, 2), Ins: []*Tensor{x(2, 3, 4, 2)}, Diff: []int{0}},
			kernelCase{Name: typ + " non-contiguous axes", Op: axes(typ, 1, 0, 2), Ins: []*Tensor{x(2, 3, 4)}, Diff: []int{0}},
			kernelCase{Name: typ + " all axes", Op: axes(typ, 0), Ins: []*Tensor{x(3, 4)}, Diff: []int{0}},
			kernelCase{Name: typ + " axes input", Op: axes(typ, 1), Ins: []*Tensor{x(2, 3, 4), intTensor([]int{1}, 1)}, Diff: []int{0}, IntIns: []int{1}},
		)
	}
	noop := axes("ReduceSum", 1)
	noop.Attrs["noop_with_empty_axes"] = onnxio.AttrValue{Kind: onnxio.AttrIsInt, Int: 1}
	cases = append(cases,
		kernelCase{Name: "ReduceSum noop", Op: noop, Ins: []*Tensor{any(2, 3), intTensor([]int{0})}, Diff: []int{0}, IntIns: []int{1}},
		kernelCase{Name: "ReduceProd with a zero", Op: axes("ReduceProd", 1, 1), Ins: []*Tensor{NewTensor([]int{2, 3}, []float64{0, 2, 3, 0.5, 0, 0})}, Diff: []int{0}},
	)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
}

// TestMathZeroDerivatives: piecewise constant functions have a zero, not a
// missing, derivative, so the layers upstream keep their global objective.
func TestMathZeroDerivatives(t *testing.T) {
	for _, typ := range []string{"Floor", "Ceil", "Round", "Sign"} {
		op := &onnxio.Op{Kind: onnxio.OpNode, Type: typ, OutType: onnxio.Float}
		if !Differentiable(op) {
			t.Errorf("%s is not differentiable", typ)
		}
	}
}
