package analysis

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
	"github.com/ecprune/ecprune/testmodels/onnxtestdata"
)

// vectorGroups are the ONNX backend node tests of every supported op. bind
// lists variants: each is a set of graph input positions fed as constants
// through ExtractOptions.Constants (weights, biases, shapes and axes are
// inputs in these models, initializers in real ones). Binary ops run with
// both operands variable and with either one constant.
var vectorGroups = []struct {
	prefix string
	bind   [][]int
}{
	{"test_relu", nil},
	{"test_leakyrelu", nil},
	{"test_prelu", [][]int{{1}}},
	{"test_tanh", nil},
	{"test_sigmoid", nil},
	{"test_hardsigmoid", nil},
	{"test_hardswish", nil}, // with _expanded: HardSigmoid then Mul of two variables
	{"test_elu", nil},
	{"test_selu", nil},
	{"test_softplus", nil},
	{"test_gelu", nil}, // not in every release of the data
	{"test_erf", nil},
	{"test_batchnorm_epsilon", [][]int{{1, 2, 3, 4}}},
	{"test_batchnorm_example", [][]int{{1, 2, 3, 4}}},
	{"test_add", [][]int{{}, {1}, {0}}},
	{"test_sub", [][]int{{}, {1}, {0}}},
	{"test_mul", [][]int{{}, {1}, {0}}},
	{"test_div", [][]int{{}, {1}, {0}}},
	{"test_softmax", nil},
	{"test_logsoftmax", nil},
	{"test_flatten", nil},
	{"test_reshape", [][]int{{1}}},
	{"test_squeeze", [][]int{{1}}},
	{"test_unsqueeze", [][]int{{1}}},
	{"test_identity", nil},
	{"test_training_dropout", [][]int{{1, 2}}},
	{"test_cast_", nil},
	{"test_gemm", [][]int{{1, 2}}},
	{"test_matmul_", [][]int{{1}}},
}

// vectorSkip are cases outside what the evaluator is for: integer or
// string tensors, training mode, optional/sequence values, and
// "_expanded" Softmax forms built from reductions.
func vectorSkip(name string) bool {
	for _, s := range []string{"uint8", "STRING", "training_mode", "identity_opt", "identity_sequence", "softmax_axis_0_expanded"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return strings.Contains(name, "softmax") && strings.HasSuffix(name, "_expanded")
}

// vectorUnsupported are cases that Extract must report as not evaluable,
// with the reason: they are not a dense layer z = W a + b.
var vectorUnsupported = map[string]string{
	// Training-mode Dropout is random unless its ratio is 0.
	"test_training_dropout":                 "training mode",
	"test_training_dropout_default":         "training mode",
	"test_training_dropout_mask":            "training mode",
	"test_training_dropout_default_mask":    "training mode",
	"test_training_dropout_zero_ratio_mask": "mask output",
}

// TestOperatorVectors runs the ONNX project's operator test vectors for
// every supported op through Extract and Run and compares the outputs.
// The vectors are float32 (or the cast's target type): outputs must match
// to float32 accuracy, casts exactly.
func TestOperatorVectors(t *testing.T) {
	onnxtestdata.Require(t)
	found := 0
	for _, g := range vectorGroups {
		cases, err := onnxtestdata.Cases(g.prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if vectorSkip(c.Name) {
				continue
			}
			binds := g.bind
			if binds == nil {
				binds = [][]int{{}}
			}
			found++
			for _, bind := range binds {
				name := c.Name
				if len(binds) > 1 {
					name = fmt.Sprintf("%s/const%v", c.Name, bind)
				}
				t.Run(name, func(t *testing.T) { runVector(t, c, bind) })
			}
		}
	}
	if found < 100 {
		t.Errorf("only %d vector cases found; is the data complete?", found)
	}
}

// runVector runs one case with the inputs at positions bind bound as
// constants.
func runVector(t *testing.T, c onnxtestdata.Case, bind []int) {
	m, err := onnxio.Load(c.ModelPath)
	if err != nil {
		t.Fatal(err)
	}
	graphIns := m.Proto.Graph.Input
	for si, set := range c.Sets {
		if len(set.Inputs) != len(graphIns) {
			t.Fatalf("set %d: %d input tensors for %d graph inputs", si, len(set.Inputs), len(graphIns))
		}
		opt := onnxio.ExtractOptions{Constants: map[string]*pb.TensorProto{}}
		byName := map[string]*pb.TensorProto{}
		for i, in := range graphIns {
			if slices.Contains(bind, i) {
				opt.Constants[in.GetName()] = set.Inputs[i]
			} else {
				byName[in.GetName()] = set.Inputs[i]
			}
		}
		net, err := onnxio.Extract(m, opt)
		if err != nil {
			t.Fatalf("Extract: %v", err)
		}
		if why, ok := vectorUnsupported[c.Name]; ok {
			if net.Evaluable {
				t.Fatalf("Extract made an evaluable network of a case expected to be refused (%s)", why)
			}
			if !strings.Contains(net.Reason, why) {
				t.Errorf("refused for %q, expected a reason mentioning %q", net.Reason, why)
			}
			return
		}
		if err := Check(net); err != nil {
			t.Fatalf("set %d: %v", si, err)
		}
		if !net.Evaluable {
			t.Fatalf("not evaluable: %s", net.Reason)
		}
		ins := make([]*Tensor, len(net.Inputs))
		for i, in := range net.Inputs {
			tp := byName[in.Name]
			if tp == nil {
				t.Fatalf("network input %q has no test tensor", in.Name)
			}
			ins[i] = decodeVector(t, tp)
		}
		tr, err := Run(net, ins)
		if err != nil {
			t.Fatalf("set %d: Run: %v", si, err)
		}
		outs := tr.Outputs()
		if len(outs) != len(set.Outputs) {
			t.Fatalf("set %d: %d outputs, want %d", si, len(outs), len(set.Outputs))
		}
		for i, wp := range set.Outputs {
			want := decodeVector(t, wp)
			rel, abs := 1e-5, 1e-6
			switch {
			case c.Name == "test_cast_FLOAT_to_BFLOAT16":
				// ONNX 1.12's reference truncated to bfloat16; ONNX Runtime
				// and later references round to nearest even (as RoundTo
				// does), so the two may differ by one bfloat16 ulp.
				rel, abs = 1.0/128, 0
			case strings.HasPrefix(c.Name, "test_cast"):
				rel, abs = 0, 0
			case wp.GetDataType() == onnxio.Double:
				rel, abs = 1e-12, 1e-14
			}
			checkTensor(t, fmt.Sprintf("set %d output %d", si, i), outs[i], want.Shape, want.Data, rel, abs)
		}
	}
}

// decodeVector decodes a test tensor (integers and bools as float64
// values). Older releases of the data
// store bfloat16 vectors as UINT16 bit patterns; those are read as the
// bfloat16 values they are.
func decodeVector(t *testing.T, tp *pb.TensorProto) *Tensor {
	t.Helper()
	if tp.GetDataType() == int32(pb.TensorProto_UINT16) {
		tp = proto.CloneOf(tp)
		tp.DataType = proto.Int32(onnxio.BFloat16)
	}
	var v []float64
	var err error
	if dt := tp.GetDataType(); onnxio.ElemSize(dt) != 0 && !onnxio.IsFloatType(dt) {
		// Integer and bool tensors (indices, shapes) as float64 integers.
		var iv []int64
		iv, err = (&onnxio.Model{}).Ints(tp)
		for _, x := range iv {
			v = append(v, float64(x))
		}
	} else {
		v, err = onnxio.DecodeFloats(tp)
	}
	if err != nil {
		t.Fatalf("decoding %q: %v", tp.GetName(), err)
	}
	shape := make([]int, len(tp.GetDims()))
	for i, d := range tp.GetDims() {
		shape[i] = int(d)
	}
	return NewTensor(shape, v)
}
