package analysis

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/onnxtestdata"
)

// cnnVectorGroups are the ONNX node tests of the convolutional ops; bind
// as in vectorGroups (weights and integer pads as constants, and the
// weights also as variables).
var cnnVectorGroups = []struct {
	prefix string
	bind   [][]int
}{
	{"test_basic_conv_", [][]int{{1}, {}}},
	{"test_conv_", [][]int{{1}, {}}},
	{"test_convtranspose", [][]int{{1}, {}}},
	{"test_maxpool_", nil},
	{"test_averagepool_", nil},
	{"test_globalaveragepool", nil},
	{"test_globalmaxpool", nil},
	{"test_constant_pad", [][]int{{1, 2}}},
	{"test_upsample_nearest", [][]int{{1}}},
	{"test_resize_upsample_scales_nearest", [][]int{{1, 2}}},
	{"test_resize_downsample_scales_nearest", [][]int{{1, 2}}},
	{"test_resize_upsample_sizes_nearest", [][]int{{1, 2, 3}}},
	{"test_resize_downsample_sizes_nearest", [][]int{{1, 2, 3}}},
}

// The edge and reflect Pad vectors pad int32 data, which the evaluator
// does not take as a graph input; TestCNNKernelDerivatives and the
// fixtures cover those modes on floats.

func TestOperatorVectorsCNN(t *testing.T) {
	onnxtestdata.Require(t)
	found := 0
	for _, g := range cnnVectorGroups {
		cases, err := onnxtestdata.Cases(g.prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if vectorSkip(c.Name) {
				continue
			}
			if strings.HasPrefix(c.Name, "test_maxpool_with_argmax") {
				found++
				t.Run(c.Name, func(t *testing.T) { runArgmaxVector(t, c) })
				continue
			}
			binds := g.bind
			if binds == nil {
				binds = [][]int{{}}
			}
			found++
			for _, bind := range binds {
				t.Run(fmt.Sprintf("%s/const%v", c.Name, bind), func(t *testing.T) { runVector(t, c, bind) })
			}
		}
	}
	if found < 35 {
		t.Errorf("only %d vector cases found; is the data complete?", found)
	}
}

// runArgmaxVector runs a MaxPool case with an Indices output (INT64,
// which runVector does not decode) and compares both outputs.
func runArgmaxVector(t *testing.T, c onnxtestdata.Case) {
	m, err := onnxio.Load(c.ModelPath)
	if err != nil {
		t.Fatal(err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(net); err != nil {
		t.Fatal(err)
	}
	for si, set := range c.Sets {
		tr, err := Run(net, []*Tensor{decodeVector(t, set.Inputs[0])})
		if err != nil {
			t.Fatal(err)
		}
		outs := tr.Outputs()
		if len(outs) != 2 {
			t.Fatalf("%d outputs, want 2", len(outs))
		}
		want := decodeVector(t, set.Outputs[0])
		checkTensor(t, fmt.Sprintf("set %d values", si), outs[0], want.Shape, want.Data, 1e-6, 1e-7)
		ip := set.Outputs[1]
		idx := make([]float64, 0, len(ip.GetInt64Data()))
		for _, v := range ip.GetInt64Data() {
			idx = append(idx, float64(v))
		}
		for i := 0; i+8 <= len(ip.GetRawData()); i += 8 {
			idx = append(idx, float64(int64(binary.LittleEndian.Uint64(ip.GetRawData()[i:]))))
		}
		checkTensor(t, fmt.Sprintf("set %d indices", si), outs[1], outs[0].Shape, idx, 0, 0)
	}
}

// attrs builds an OpNode attribute map from name/value pairs (int64,
// []int64, float64 or string values).
func attrs(kv ...any) map[string]onnxio.AttrValue {
	m := map[string]onnxio.AttrValue{}
	for i := 0; i < len(kv); i += 2 {
		name := kv[i].(string)
		switch v := kv[i+1].(type) {
		case int:
			m[name] = onnxio.AttrValue{Kind: onnxio.AttrIsInt, Int: int64(v)}
		case []int64:
			m[name] = onnxio.AttrValue{Kind: onnxio.AttrIsInts, Ints: v}
		case float64:
			m[name] = onnxio.AttrValue{Kind: onnxio.AttrIsFloat, Float: v}
		case string:
			m[name] = onnxio.AttrValue{Kind: onnxio.AttrIsString, Str: v}
		default:
			panic(fmt.Sprintf("attrs: %T", v))
		}
	}
	return m
}

// TestCNNKernelDerivatives checks JVP and VJP of every kernel of the
// family against finite differences over a table of shapes and
// attributes.
func TestCNNKernelDerivatives(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	r := func(shape ...int) *Tensor { return randTensor(rng, -1, 1, shape...) }
	// distinct keeps max windows away from ties by more than the FD step.
	distinct := func(shape ...int) *Tensor {
		x := NewTensor(shape, nil)
		for i, p := range rng.Perm(x.Len()) {
			x.Data[i] = float64(p)*0.01 - 0.3
		}
		return x
	}
	op := func(typ string, kv ...any) onnxio.Op { return onnxio.Op{Type: typ, Attrs: attrs(kv...)} }
	cases := []kernelCase{
		{Name: "conv2d", Op: op("Conv", "pads", []int64{1, 1, 1, 1}), Ins: []*Tensor{r(2, 3, 5, 5), r(4, 3, 3, 3), r(4)}, Diff: []int{0, 1, 2}},
		{Name: "conv2d strided dilated asym", Op: op("Conv", "pads", []int64{0, 1, 2, 0}, "strides", []int64{2, 1}, "dilations", []int64{1, 2}),
			Ins: []*Tensor{r(2, 2, 7, 6), r(3, 2, 3, 2), nil}, Diff: []int{0, 1}},
		{Name: "conv2d groups", Op: op("Conv", "group", 2, "auto_pad", "SAME_UPPER", "strides", []int64{2, 2}), Ins: []*Tensor{r(2, 4, 5, 6), r(6, 2, 3, 3), r(6)}, Diff: []int{0, 1, 2}},
		{Name: "conv2d depthwise same_lower", Op: op("Conv", "group", 3, "auto_pad", "SAME_LOWER"), Ins: []*Tensor{r(2, 3, 4, 4), r(3, 1, 2, 2), r(3)}, Diff: []int{0, 1, 2}},
		{Name: "conv2d 5x5 depthwise on 2x1", Op: op("Conv", "group", 2, "pads", []int64{2, 2, 2, 2}), Ins: []*Tensor{r(2, 2, 2, 1), r(2, 1, 5, 5), r(2)}, Diff: []int{0, 1, 2}},
		{Name: "conv2d strided on 1x1", Op: op("Conv", "pads", []int64{1, 2, 1, 2}, "strides", []int64{2, 2}), Ins: []*Tensor{r(1, 2, 1, 1), r(3, 2, 3, 5), nil}, Diff: []int{0, 1}},
		{Name: "conv2d pointwise", Op: op("Conv"), Ins: []*Tensor{r(3, 4, 3, 3), r(5, 4, 1, 1), r(5)}, Diff: []int{0, 1, 2}},
		{Name: "conv1d valid", Op: op("Conv", "auto_pad", "VALID", "strides", []int64{2}), Ins: []*Tensor{r(2, 2, 9), r(3, 2, 3), nil}, Diff: []int{0, 1}},
		{Name: "conv3d", Op: op("Conv", "pads", []int64{1, 0, 1, 0, 1, 1}), Ins: []*Tensor{r(1, 2, 3, 4, 3), r(2, 2, 2, 2, 2), r(2)}, Diff: []int{0, 1, 2}},
		{Name: "convtranspose2d", Op: op("ConvTranspose", "pads", []int64{1, 0, 1, 1}, "strides", []int64{2, 3}, "output_padding", []int64{1, 0}),
			Ins: []*Tensor{r(2, 3, 3, 4), r(3, 2, 3, 4), r(2)}, Diff: []int{0, 1, 2}},
		{Name: "convtranspose2d groups dilations same_upper", Op: op("ConvTranspose", "group", 2, "auto_pad", "SAME_UPPER", "strides", []int64{2, 2}, "dilations", []int64{2, 1}),
			Ins: []*Tensor{r(2, 4, 3, 3), r(4, 3, 3, 2), r(6)}, Diff: []int{0, 1, 2}},
		{Name: "convtranspose1d output_shape", Op: op("ConvTranspose", "strides", []int64{3}, "output_shape", []int64{11}),
			Ins: []*Tensor{r(2, 2, 4), r(2, 3, 3), nil}, Diff: []int{0, 1}},
		{Name: "convtranspose3d", Op: op("ConvTranspose"), Ins: []*Tensor{r(1, 2, 2, 3, 2), r(2, 2, 2, 2, 2), r(2)}, Diff: []int{0, 1, 2}},
		{Name: "maxpool2d", Op: op("MaxPool", "kernel_shape", []int64{2, 2}, "strides", []int64{2, 2}), Ins: []*Tensor{distinct(2, 3, 6, 6)}, Diff: []int{0}},
		{Name: "maxpool2d pads ceil dilations", Op: op("MaxPool", "kernel_shape", []int64{3, 2}, "strides", []int64{2, 2}, "pads", []int64{1, 1, 1, 0}, "ceil_mode", 1, "dilations", []int64{1, 2}),
			Ins: []*Tensor{distinct(2, 2, 7, 8)}, Diff: []int{0}},
		{Name: "maxpool1d same", Op: op("MaxPool", "kernel_shape", []int64{3}, "auto_pad", "SAME_UPPER", "strides", []int64{2}), Ins: []*Tensor{distinct(2, 2, 7)}, Diff: []int{0}},
		{Name: "maxpool3d", Op: op("MaxPool", "kernel_shape", []int64{2, 2, 2}), Ins: []*Tensor{distinct(1, 2, 3, 3, 4)}, Diff: []int{0}},
		{Name: "avgpool2d", Op: op("AveragePool", "kernel_shape", []int64{3, 3}, "strides", []int64{2, 2}, "pads", []int64{1, 1, 1, 1}), Ins: []*Tensor{r(2, 3, 6, 7)}, Diff: []int{0}},
		{Name: "avgpool2d include pad ceil", Op: op("AveragePool", "kernel_shape", []int64{3, 2}, "strides", []int64{2, 2}, "pads", []int64{1, 0, 1, 1}, "count_include_pad", 1, "ceil_mode", 1),
			Ins: []*Tensor{r(2, 2, 6, 5)}, Diff: []int{0}},
		{Name: "avgpool1d same_lower", Op: op("AveragePool", "kernel_shape", []int64{4}, "auto_pad", "SAME_LOWER"), Ins: []*Tensor{r(2, 2, 7)}, Diff: []int{0}},
		{Name: "globalavgpool", Op: op("GlobalAveragePool"), Ins: []*Tensor{r(2, 3, 4, 5)}, Diff: []int{0}},
		{Name: "globalavgpool1d", Op: op("GlobalAveragePool"), Ins: []*Tensor{r(2, 3, 4)}, Diff: []int{0}},
		{Name: "globalmaxpool", Op: op("GlobalMaxPool"), Ins: []*Tensor{distinct(2, 3, 4, 5)}, Diff: []int{0}},
		{Name: "pad constant", Op: op("Pad", "mode", "constant"), Ins: []*Tensor{r(2, 3, 4), intTensor([]int{6}, 0, 1, 2, 0, 2, 1), NewTensor(nil, []float64{0.5})}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "pad reflect", Op: op("Pad", "mode", "reflect"), Ins: []*Tensor{r(2, 3, 4), intTensor([]int{6}, 0, 2, 3, 0, 1, 3)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "pad edge crop", Op: op("Pad", "mode", "edge"), Ins: []*Tensor{r(2, 3, 4), intTensor([]int{6}, 0, -1, 2, 0, 2, -1)}, Diff: []int{0}, IntIns: []int{1}},
		{Name: "pad wrap axes", Op: op("Pad", "mode", "wrap"), Ins: []*Tensor{r(2, 3, 4), intTensor([]int{2}, 2, 5), nil, intTensor([]int{1}, -1)}, Diff: []int{0}, IntIns: []int{1, 3}},
		{Name: "resize nearest sizes", Op: op("Resize", "coordinate_transformation_mode", "half_pixel"), Ins: []*Tensor{r(2, 3, 3, 4), nil, nil, intTensor([]int{4}, 2, 3, 5, 3)}, Diff: []int{0}, IntIns: []int{3}},
		{Name: "pad attribute (opset 2)", Op: op("Pad", "pads", []int64{1, 0, 0, 2}, "value", 1.5), Ins: []*Tensor{r(3, 4)}, Diff: []int{0}},
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { checkKernel(t, c) })
	}
}

// TestMaxPoolTiesAndIndices: ties go to the first maximum in window
// order, in the value's derivative and in the Indices output.
func TestMaxPoolTiesAndIndices(t *testing.T) {
	o := onnxio.Op{Kind: onnxio.OpNode, Type: "MaxPool", Attrs: attrs("kernel_shape", []int64{2, 2}, "strides", []int64{2, 2}), OutType: onnxio.Float}
	x := NewTensor([]int{1, 2, 2, 2}, []float64{1, 3, 3, 0, 5, 5, 5, 5})
	k := kernels["MaxPool"]
	y, err := k.Forward(&o, []*Tensor{x})
	if err != nil {
		t.Fatal(err)
	}
	st, err := k.Prepare(&o, []*Tensor{x}, y)
	if err != nil {
		t.Fatal(err)
	}
	if arg := st.([]int); arg[0] != 1 || arg[1] != 4 {
		t.Errorf("argmax %v, want [1 4]", arg)
	}
	oi := o
	oi.OutIndex, oi.OutType = 1, onnxio.Int64
	idx, err := k.Forward(&oi, []*Tensor{x})
	if err != nil {
		t.Fatal(err)
	}
	if idx.Data[0] != 1 || idx.Data[1] != 4 || y.Data[0] != 3 || y.Data[1] != 5 {
		t.Errorf("values %v, indices %v; want [3 5], [1 4]", y.Data, idx.Data)
	}
}
