package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/onnxtestdata"
)

// Tests of the data-movement, shape-arithmetic and product kernels
// (op_movement.go, op_shape.go, op_matmul.go, op_einsum.go).

// tensorVectorGroups are the ONNX node tests of these ops. bind variants
// as in vectorGroups: {} runs every input as a run-time value (shapes,
// axes and indices computed by the graph), others bind those as
// constants.
var tensorVectorGroups = []struct {
	prefix string
	bind   [][]int
}{
	{"test_transpose", nil},
	{"test_concat", nil},
	{"test_split_", [][]int{{}, {1}}},
	{"test_slice", [][]int{{}, {1, 2, 3, 4}}},
	{"test_gather_", [][]int{{}, {1}, {0}}},
	{"test_expand", [][]int{{}, {1}}},
	{"test_tile", [][]int{{}, {1}}},
	{"test_where", [][]int{{}, {0}, {1, 2}}},
	{"test_equal", nil},
	{"test_less", nil},
	{"test_greater", nil},
	{"test_not", nil},
	{"test_and", nil},
	{"test_or", nil},
	{"test_xor", nil},
	{"test_shape", nil},
	{"test_size", nil},
	{"test_constantofshape", nil},
	{"test_range", nil},
	{"test_argmax", nil},
	{"test_argmin", nil},
	{"test_cumsum", nil},
	{"test_tril", nil},
	{"test_triu", nil},
	{"test_einsum", nil},
	{"test_mod", nil},
	{"test_neg", nil},
	{"test_reshape", [][]int{{}}},
	{"test_squeeze", [][]int{{}}},
	{"test_unsqueeze", [][]int{{}}},
	{"test_flatten", nil},
	{"test_matmul_", [][]int{{}, {0}}},
	{"test_gemm", [][]int{{}, {1}, {0, 2}}},
	{"test_scatternd", [][]int{{}, {1}}},
	{"test_scatter_elements", [][]int{{}, {1}}},
	{"test_scatter_with", [][]int{{}, {1}}},
	{"test_scatter_without", [][]int{{}, {1}}},
}

// tensorVectorSkip: 16-bit and unsigned 32-64-bit tensors (no decoder,
// no use in shape arithmetic), the mask output of Dropout, Range's
// expanded form (a Loop), and scatters that reduce (their kernels refuse
// them: TestScatterReduction).
func tensorVectorSkip(name string) bool {
	if strings.HasPrefix(name, "test_range") && strings.HasSuffix(name, "_expanded") {
		return true
	}
	for _, s := range []string{"uint16", "uint32", "uint64", "int16", "_mask", "scatternd_add", "scatternd_multiply", "scatter_elements_with_duplicate_indices"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return vectorSkip(name)
}

func TestOperatorVectorsTensor(t *testing.T) {
	onnxtestdata.Require(t)
	found := 0
	for _, g := range tensorVectorGroups {
		cases, err := onnxtestdata.Cases(g.prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if tensorVectorSkip(c.Name) {
				continue
			}
			binds := g.bind
			if binds == nil {
				binds = [][]int{{}}
			}
			found++
			for _, bind := range binds {
				name := fmt.Sprintf("%s/const%v", c.Name, bind)
				t.Run(name, func(t *testing.T) { runVector(t, c, bind) })
			}
		}
	}
	if found < 200 {
		t.Errorf("only %d vector cases found; is the data complete?", found)
	}
}

// TestTensorKernelDerivatives checks JVP and VJP of every differentiable
// kernel of these families against finite differences.
func TestTensorKernelDerivatives(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	r := func(shape ...int) *Tensor { return randTensor(rng, -1, 1, shape...) }
	ints := func(v ...int) *Tensor { return intTensor([]int{len(v)}, v...) }
	attr := func(kv ...any) map[string]onnxio.AttrValue {
		m := map[string]onnxio.AttrValue{}
		for i := 0; i < len(kv); i += 2 {
			switch v := kv[i+1].(type) {
			case int:
				m[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsInt, Int: int64(v)}
			case float64:
				m[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsFloat, Float: v}
			case string:
				m[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsString, Str: v}
			case []int64:
				m[kv[i].(string)] = onnxio.AttrValue{Kind: onnxio.AttrIsInts, Ints: v}
			}
		}
		return m
	}
	cond := intTensor([]int{3, 1}, 1, 0, 1)
	cases := []kernelCase{
		{Name: "reshape", Op: onnxio.Op{Type: "Reshape"}, Ins: []*Tensor{r(2, 3, 4), ints(0, -1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "squeeze", Op: onnxio.Op{Type: "Squeeze"}, Ins: []*Tensor{r(2, 1, 4), ints(-2)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "unsqueeze", Op: onnxio.Op{Type: "Unsqueeze", Attrs: attr("axes", []int64{0, 3})}, Ins: []*Tensor{r(2, 4)}, Diff: []int{0}},
		{Name: "flatten", Op: onnxio.Op{Type: "Flatten", Attrs: attr("axis", 2)}, Ins: []*Tensor{r(2, 3, 4)}, Diff: []int{0}},
		{Name: "identity", Op: onnxio.Op{Type: "Identity"}, Ins: []*Tensor{r(3)}, Diff: []int{0}},
		{Name: "transpose", Op: onnxio.Op{Type: "Transpose", Attrs: attr("perm", []int64{2, 0, 3, 1, 4})}, Ins: []*Tensor{r(2, 3, 2, 2, 3)}, Diff: []int{0}},
		{Name: "transpose default", Op: onnxio.Op{Type: "Transpose"}, Ins: []*Tensor{r(2, 3, 4)}, Diff: []int{0}},
		{Name: "concat", Op: onnxio.Op{Type: "Concat", Attrs: attr("axis", 1)}, Ins: []*Tensor{r(2, 1, 3), r(2, 4, 3)}, Diff: []int{0, 1}},
		{Name: "split 1", Op: onnxio.Op{Type: "Split", Attrs: attr("axis", -1), OutIndex: 1, Outputs: 3}, Ins: []*Tensor{r(2, 9)}, Diff: []int{0}},
		{Name: "split sizes", Op: onnxio.Op{Type: "Split", Attrs: attr("axis", 1), OutIndex: 2}, Ins: []*Tensor{r(2, 6), ints(1, 2, 3)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "split num_outputs", Op: onnxio.Op{Type: "Split", Attrs: attr("num_outputs", 3), OutIndex: 2}, Ins: []*Tensor{r(7, 2)}, Diff: []int{0}},
		{Name: "slice", Op: onnxio.Op{Type: "Slice"}, Ins: []*Tensor{r(4, 5, 6), ints(1, -1), ints(math.MaxInt32, -6), ints(0, 2), ints(2, -2)}, Diff: []int{0}, IntIns: []int{1, 2, 3, 4}},
		{Name: "slice attrs", Op: onnxio.Op{Type: "Slice", Attrs: attr("starts", []int64{0}, "ends", []int64{1}, "axes", []int64{1})}, Ins: []*Tensor{r(3, 4)}, Diff: []int{0}},
		{Name: "gather", Op: onnxio.Op{Type: "Gather", Attrs: attr("axis", 1)}, Ins: []*Tensor{r(2, 3, 4), intTensor([]int{2, 2}, 0, -1, 1, 0)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "gather scalar", Op: onnxio.Op{Type: "Gather", Attrs: attr("axis", 1)}, Ins: []*Tensor{r(2, 3, 4), intTensor(nil, 0)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "gather elements", Op: onnxio.Op{Type: "GatherElements", Attrs: attr("axis", 1)}, Ins: []*Tensor{r(2, 3), intTensor([]int{2, 2}, 0, 2, -1, 1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "expand", Op: onnxio.Op{Type: "Expand"}, Ins: []*Tensor{r(1, 1, 4), ints(3, 2, 1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "tile", Op: onnxio.Op{Type: "Tile"}, Ins: []*Tensor{r(2, 3), ints(2, 3)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "where", Op: onnxio.Op{Type: "Where"}, Ins: []*Tensor{cond, r(3, 4), r(4)}, Diff: []int{1, 2}, IntIns: []int{0}},
		{Name: "trilu lower", Op: onnxio.Op{Type: "Trilu", Attrs: attr("upper", 0)}, Ins: []*Tensor{r(2, 3, 4), intTensor(nil, -1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "trilu upper", Op: onnxio.Op{Type: "Trilu"}, Ins: []*Tensor{r(4, 3)}, Diff: []int{0}},
		{Name: "scatternd rows", Op: onnxio.Op{Type: "ScatterND"}, Ins: []*Tensor{r(4, 3), intTensor([]int{2, 1}, 3, -4), r(2, 3)}, Diff: []int{0, 2}, IntIns: []int{1}},
		{Name: "scatternd elements", Op: onnxio.Op{Type: "ScatterND"}, Ins: []*Tensor{r(2, 3, 2), intTensor([]int{3, 3}, 0, 1, 1, 1, 2, 0, 0, 1, 1), r(3)}, Diff: []int{0, 2}, IntIns: []int{1}},
		{Name: "scatter elements", Op: onnxio.Op{Type: "ScatterElements", Attrs: attr("axis", -1)}, Ins: []*Tensor{r(2, 4), intTensor([]int{2, 2}, 3, 0, -1, 1), r(2, 2)}, Diff: []int{0, 2}, IntIns: []int{1}},
		{Name: "scatter", Op: onnxio.Op{Type: "Scatter"}, Ins: []*Tensor{r(3, 2), intTensor([]int{1, 2}, 2, 0), r(1, 2)}, Diff: []int{0, 2}, IntIns: []int{1}},
		{Name: "cumsum", Op: onnxio.Op{Type: "CumSum", Attrs: attr("exclusive", 1, "reverse", 1)}, Ins: []*Tensor{r(2, 5), intTensor(nil, 1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "add", Op: onnxio.Op{Type: "Add"}, Ins: []*Tensor{r(2, 3), r(3)}, Diff: []int{0, 1}},
		{Name: "sub", Op: onnxio.Op{Type: "Sub"}, Ins: []*Tensor{r(2, 1), r(3)}, Diff: []int{0, 1}},
		{Name: "mul", Op: onnxio.Op{Type: "Mul"}, Ins: []*Tensor{r(2, 3), r(2, 1)}, Diff: []int{0, 1}},
		{Name: "div", Op: onnxio.Op{Type: "Div"}, Ins: []*Tensor{r(2, 3), randTensor(rng, 1, 2, 3)}, Diff: []int{0, 1}},
		{Name: "neg", Op: onnxio.Op{Type: "Neg"}, Ins: []*Tensor{r(4)}, Diff: []int{0}},
		{Name: "cast", Op: onnxio.Op{Type: "Cast", Attrs: attr("to", int(onnxio.Double))}, Ins: []*Tensor{r(4)}, Diff: []int{0}},
		{Name: "matmul", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(2, 3, 4, 5), r(2, 3, 5, 6)}, Diff: []int{0, 1}},
		{Name: "matmul bcast", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(2, 1, 4, 5), r(3, 5, 2)}, Diff: []int{0, 1}},
		{Name: "matmul fold", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(2, 3, 4, 5), r(5, 2)}, Diff: []int{0, 1}},
		{Name: "matmul const first", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(4, 5), r(3, 5, 2)}, Diff: []int{1}},
		{Name: "matmul 1d", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(5), r(3, 5, 2)}, Diff: []int{0, 1}},
		{Name: "matmul 1d right", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(3, 4, 5), r(5)}, Diff: []int{0, 1}},
		{Name: "matmul vec", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(5), r(5)}, Diff: []int{0, 1}},
		{Name: "matmul many", Op: onnxio.Op{Type: "MatMul"}, Ins: []*Tensor{r(64, 8, 9), r(64, 9, 8)}, Diff: []int{0, 1}},
		{Name: "einsum bi,oi", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bi,oi->bo")}, Ins: []*Tensor{r(3, 4), r(5, 4)}, Diff: []int{0, 1}},
		{Name: "einsum qk", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bhqd,bhkd->bhqk")}, Ins: []*Tensor{r(2, 2, 3, 4), r(2, 2, 5, 4)}, Diff: []int{0, 1}},
		{Name: "einsum av", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bhqk,bhkd->bhqd")}, Ins: []*Tensor{r(2, 2, 3, 5), r(2, 2, 5, 4)}, Diff: []int{0, 1}},
		{Name: "einsum bilinear", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bn,anm,bm->ba")}, Ins: []*Tensor{r(3, 4), r(2, 4, 5), r(3, 5)}, Diff: []int{0, 1, 2}},
		{Name: "einsum sum-out", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bij,bkj->bi")}, Ins: []*Tensor{r(2, 3, 4), r(2, 5, 4)}, Diff: []int{0, 1}},
		{Name: "einsum diag", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "bii,bj->bij")}, Ins: []*Tensor{r(2, 3, 3), r(2, 4)}, Diff: []int{0, 1}},
		{Name: "einsum ellipsis", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "...ij,...jk")}, Ins: []*Tensor{r(2, 3, 4), r(2, 4, 5)}, Diff: []int{0, 1}},
		{Name: "einsum one operand", Op: onnxio.Op{Type: "Einsum", Attrs: attr("equation", "ijk->ki")}, Ins: []*Tensor{r(2, 3, 4)}, Diff: []int{0}},
	}
	for _, ta := range []int{0, 1} {
		for _, tb := range []int{0, 1} {
			a, b := r(3, 4), r(4, 5)
			if ta == 1 {
				a = r(4, 3)
			}
			if tb == 1 {
				b = r(5, 4)
			}
			cases = append(cases,
				kernelCase{Name: fmt.Sprintf("gemm ta%d tb%d", ta, tb), Op: onnxio.Op{Type: "Gemm", Attrs: attr("transA", ta, "transB", tb, "alpha", 0.5, "beta", 2.0)},
					Ins: []*Tensor{a, b, r(3, 1)}, Diff: []int{0, 1, 2}},
				kernelCase{Name: fmt.Sprintf("gemm ta%d tb%d no C", ta, tb), Op: onnxio.Op{Type: "Gemm", Attrs: attr("transA", ta, "transB", tb)},
					Ins: []*Tensor{a, b}, Diff: []int{0, 1}})
		}
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
}

// TestScatterReduction: the scatters that reduce (add, mul, max, min)
// are refused by Check, with the reduction named; overwriting ones pass.
func TestScatterReduction(t *testing.T) {
	for _, typ := range []string{"ScatterND", "ScatterElements"} {
		for _, red := range []string{"", "none", "add", "mul", "max", "min"} {
			op := &onnxio.Op{Type: typ, Attrs: map[string]onnxio.AttrValue{}}
			if red != "" {
				op.Attrs["reduction"] = onnxio.AttrValue{Kind: onnxio.AttrIsString, Str: red}
			}
			err := kernels[typ].Check(op)
			if ok := red == "" || red == "none"; ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), red)) {
				t.Errorf("%s reduction %q: %v", typ, red, err)
			}
		}
	}
}

// TestTensorKernelForward pins semantics the vectors leave open.
func TestTensorKernelForward(t *testing.T) {
	ints := func(v ...int) *Tensor { return intTensor([]int{len(v)}, v...) }
	big := NewTensor([]int{1}, []float64{math.MaxInt64}) // INT64_MAX as float64 holds it: 2^63
	small := NewTensor([]int{1}, []float64{math.MinInt64})
	x := NewTensor([]int{2, 5}, []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	iop := func(typ string, attrs map[string]onnxio.AttrValue, n int) *onnxio.Op {
		op := &onnxio.Op{Kind: onnxio.OpNode, Type: typ, Attrs: attrs, OutType: onnxio.Int64}
		op.InTypes = make([]int32, n)
		for i := range op.InTypes {
			op.InTypes[i] = onnxio.Int64
		}
		return op
	}
	fop := func(typ string, attrs map[string]onnxio.AttrValue) *onnxio.Op {
		return &onnxio.Op{Kind: onnxio.OpNode, Type: typ, Attrs: attrs, OutType: onnxio.Float}
	}
	to := func(dt int32) map[string]onnxio.AttrValue {
		return map[string]onnxio.AttrValue{"to": {Kind: onnxio.AttrIsInt, Int: int64(dt)}}
	}
	for _, c := range []struct {
		name  string
		op    *onnxio.Op
		in    []*Tensor
		shape []int
		want  []float64
	}{
		{"int div truncates", iop("Div", nil, 2), []*Tensor{ints(-7, 7, -7, 6), ints(2, -2, -2, 4)}, []int{4}, []float64{-3, -3, 3, 1}},
		{"int mod python", iop("Mod", nil, 2), []*Tensor{ints(-7, 7, -7), ints(2, -2, -2)}, []int{3}, []float64{1, -1, -1}},
		{"int mod c", iop("Mod", map[string]onnxio.AttrValue{"fmod": {Kind: onnxio.AttrIsInt, Int: 1}}, 2), []*Tensor{ints(-7, 7), ints(2, -2)}, []int{2}, []float64{-1, 1}},
		{"int mul bcast", iop("Mul", nil, 2), []*Tensor{ints(2, 3), intTensor(nil, -1)}, []int{2}, []float64{-2, -3}},
		{"cast to int64 truncates", fop("Cast", to(onnxio.Int64)), []*Tensor{NewTensor([]int{4}, []float64{-1.7, 1.7, -0.2, 3})}, []int{4}, []float64{-1, 1, 0, 3}},
		{"cast to bool", fop("Cast", to(onnxio.Bool)), []*Tensor{NewTensor([]int{3}, []float64{-0.5, 0, 2})}, []int{3}, []float64{1, 0, 1}},
		{"cast to int8 wraps", fop("Cast", to(onnxio.Int8)), []*Tensor{NewTensor([]int{2}, []float64{200, -129})}, []int{2}, []float64{-56, 127}},
		{"cast to float rounds", fop("Cast", to(onnxio.Float)), []*Tensor{NewTensor([]int{1}, []float64{0.1})}, []int{1}, []float64{float64(float32(0.1))}},
		{"slice to INT64_MAX", fop("Slice", nil), []*Tensor{x, ints(2), big, ints(1)}, []int{2, 3}, []float64{2, 3, 4, 7, 8, 9}},
		{"slice reversed to INT64_MIN", fop("Slice", nil), []*Tensor{x, ints(-1), small, ints(1), ints(-2)}, []int{2, 3}, []float64{4, 2, 0, 9, 7, 5}},
		{"slice empty", fop("Slice", nil), []*Tensor{x, ints(3), ints(1), ints(1)}, []int{2, 0}, nil},
		{"shape start end", iop("Shape", map[string]onnxio.AttrValue{"start": {Kind: onnxio.AttrIsInt, Int: -1}}, 1), []*Tensor{x}, []int{1}, []float64{5}},
		{"range int", iop("Range", nil, 3), []*Tensor{intTensor(nil, 10), intTensor(nil, 4), intTensor(nil, -3)}, []int{2}, []float64{10, 7}},
		{"split num_outputs", fop("Split", map[string]onnxio.AttrValue{"num_outputs": {Kind: onnxio.AttrIsInt, Int: 3}, "axis": {Kind: onnxio.AttrIsInt, Int: 1}}), []*Tensor{x}, []int{2, 2}, []float64{0, 1, 5, 6}},
		{"reshape allowzero", fop("Reshape", map[string]onnxio.AttrValue{"allowzero": {Kind: onnxio.AttrIsInt, Int: 1}}), []*Tensor{NewTensor([]int{0, 3}, nil), ints(3, 0)}, []int{3, 0}, nil},
		{"reshape zero copies", fop("Reshape", nil), []*Tensor{x, ints(0, -1, 1)}, []int{2, 5, 1}, x.Data},
		{"unsqueeze scalar", iop("Unsqueeze", nil, 2), []*Tensor{intTensor(nil, 7), ints(0)}, []int{1}, []float64{7}},
		{"argmax last", iop("ArgMax", map[string]onnxio.AttrValue{"axis": {Kind: onnxio.AttrIsInt, Int: 1}, "select_last_index": {Kind: onnxio.AttrIsInt, Int: 1}}, 1), []*Tensor{NewTensor([]int{1, 3}, []float64{2, 2, 1})}, []int{1, 1}, []float64{1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "split num_outputs" {
				c.op.OutIndex = 0
			}
			k := kernels[c.op.Type]
			if k.Check != nil {
				if err := k.Check(c.op); err != nil {
					t.Fatal(err)
				}
			}
			got, err := k.Forward(c.op, c.in)
			if err != nil {
				t.Fatal(err)
			}
			checkTensor(t, c.name, got, c.shape, c.want, 0, 0)
		})
	}
	// Integer division by zero is an error, not a silent Inf.
	if _, err := kernels["Div"].Forward(iop("Div", nil, 2), []*Tensor{ints(1), ints(0)}); err == nil {
		t.Error("integer division by zero accepted")
	}
}

// naiveEinsum is the einsum by its definition: a sum over every
// assignment of the labels.
func naiveEinsum(eq string, in []*Tensor) *Tensor {
	lhs, rhs, _ := strings.Cut(eq, "->")
	specs := strings.Split(lhs, ",")
	size := map[byte]int{}
	var all []byte
	for i, s := range specs {
		for ax := range len(s) {
			if _, ok := size[s[ax]]; !ok {
				all = append(all, s[ax])
			}
			size[s[ax]] = in[i].Shape[ax]
		}
	}
	var shape []int
	for i := range len(rhs) {
		shape = append(shape, size[rhs[i]])
	}
	out := NewTensor(shape, nil)
	val := map[byte]int{}
	var rec func(d int)
	rec = func(d int) {
		if d == len(all) {
			p := 1.0
			for i, s := range specs {
				off := 0
				for ax := range len(s) {
					off = off*in[i].Shape[ax] + val[s[ax]]
				}
				p *= in[i].Data[off]
			}
			off := 0
			for ax := range len(rhs) {
				off = off*shape[ax] + val[rhs[ax]]
			}
			out.Data[off] += p
			return
		}
		for v := range size[all[d]] {
			val[all[d]] = v
			rec(d + 1)
		}
	}
	rec(0)
	return out
}

func TestEinsumForms(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		eq     string
		shapes [][]int
	}{
		{"bi,oi->bo", [][]int{{3, 4}, {5, 4}}},
		{"bhqd,bhkd->bhqk", [][]int{{2, 3, 4, 5}, {2, 3, 6, 5}}},
		{"bhqk,bhkd->bhqd", [][]int{{2, 3, 4, 6}, {2, 3, 6, 5}}},
		{"bij,bjk->bik", [][]int{{2, 3, 4}, {2, 4, 5}}},
		{"bn,anm,bm->ba", [][]int{{3, 4}, {2, 4, 5}, {3, 5}}},
		{"ij,jk->ki", [][]int{{3, 4}, {4, 5}}},
		{"ij,ij->", [][]int{{3, 4}, {3, 4}}},
		{"i,j->ij", [][]int{{3}, {4}}},
		{"bii->bi", [][]int{{2, 3, 3}}},
		{"ii->", [][]int{{4, 4}}},
		{"bid,bjd->bij", [][]int{{2, 1, 3}, {2, 4, 3}}},
		{"abc,cd->abd", [][]int{{2, 3, 4}, {4, 5}}},
	} {
		t.Run(c.eq, func(t *testing.T) {
			in := make([]*Tensor, len(c.shapes))
			for i, s := range c.shapes {
				in[i] = randTensor(rng, -1, 1, s...)
			}
			op := &onnxio.Op{Kind: onnxio.OpNode, Type: "Einsum", OutType: onnxio.Float,
				Attrs: map[string]onnxio.AttrValue{"equation": {Kind: onnxio.AttrIsString, Str: c.eq}}}
			got, err := einsumForward(op, in)
			if err != nil {
				t.Fatal(err)
			}
			want := naiveEinsum(c.eq, in)
			checkTensor(t, c.eq, got, want.Shape, want.Data, 1e-12, 1e-12)
		})
	}
	// Implicit output: labels used once, alphabetically; a repeated label
	// is summed.
	a := randTensor(rng, -1, 1, 3, 4)
	b := randTensor(rng, -1, 1, 4, 2)
	op := &onnxio.Op{Kind: onnxio.OpNode, Type: "Einsum", Attrs: map[string]onnxio.AttrValue{"equation": {Kind: onnxio.AttrIsString, Str: "kj,ji"}}}
	got, err := einsumForward(op, []*Tensor{a, b})
	if err != nil {
		t.Fatal(err)
	}
	want := naiveEinsum("kj,ji->ik", []*Tensor{a, b})
	checkTensor(t, "implicit", got, want.Shape, want.Data, 1e-12, 1e-12)
}

// TestMatMulBatchedParallel: the slices run at once give the sequential
// result exactly.
func TestMatMulBatchedParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a, b := randTensor(rng, -1, 1, 8, 16, 50, 16), randTensor(rng, -1, 1, 8, 16, 16, 50)
	got, err := matMulForward(nil, []*Tensor{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for s := range 8 * 16 {
		want := make([]float64, 50*50)
		matmul(false, false, 50, 50, 16, a.Data[s*800:], b.Data[s*800:], want, 0)
		if !slices.Equal(got.Data[s*2500:(s+1)*2500], want) {
			t.Fatalf("slice %d differs", s)
		}
	}
}
