package testmodels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Case is one catalogue model with what a test needs to know about it.
//
// Layers and Prunable follow one definition so that every package counts
// the same way. A dense layer is a Gemm or a MatMul (with its bias Add when
// there is one) whose weight is a float initializer. It is prunable when one
// of its output neurons can be removed by deleting a row of its weight (and
// bias entry) and the matching input column of every dense layer it feeds:
// its output reaches only dense layers, through ops that act per feature
// (activations, BatchNormalization, Dropout, Identity, Cast, elementwise ops
// with a scalar or per-feature constant); it reaches no graph output, no
// Softmax, no residual Add; and neither its own weight and bias nor the
// weights of the layers it feeds are shared with another node or exposed as
// a graph output. The last layer of an MLP is therefore never prunable.
// When Unsupported is set the model is refused as a whole: Prunable is 0
// and Layers counts the float dense layers present.
type Case struct {
	Name     string             // unique, e.g. "gemm_relu_opset13"
	Model    *onnxpb.ModelProto // built fresh by All/ByName: callers may modify it
	External map[string][]byte  // external data files (relative name -> bytes); nil when none
	// InputShape is the per-sample shape of the graph input "input", without
	// the batch dimension "N".
	InputShape  []int64
	Layers      int     // dense layers an extractor should find
	Prunable    int     // how many of them are prunable (see above)
	Notes       string  // the pattern the case exercises
	Tol         float64 // tolerance against ONNX Runtime: |got-want| <= Tol*max(1,|want|)
	Unsupported string  // op an extractor must report as unsupported; "" when supported

	inLo, inHi float64 // range of the values Inputs draws; [-2, 2) when both are 0
}

// Tolerances are meant for |got - want| <= Tol * max(1, |want|): relative
// for large outputs, absolute near zero, where a purely relative test is
// meaningless for any element type.
//
// tolFloat32: float32 compute, where ORT and a float64 reference differ by
// rounding and summation order only.
const tolFloat32 = 1e-5

// tolFloat16: model.half() rounds every op's output to float16 (unit
// roundoff 4.9e-4). On 4096 samples ORT's float16 run of float16_opset13
// stayed within 4.9e-4 of the largest output in its row (9.8e-4 absolute)
// of ORT's float32 run on the same values; 2e-3 leaves a 4x margin while a
// wrong neuron still moves outputs by O(0.1).
const tolFloat16 = 2e-3

// Write writes the model as dir/model.onnx, and its external data files
// beside it, and returns the model path. dir is created if needed.
func (c Case) Write(dir string) (string, error) {
	if c.Model == nil {
		return "", fmt.Errorf("testmodels: case %q has no model", c.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.Model)
	if err != nil {
		return "", fmt.Errorf("testmodels: %s: marshal: %w", c.Name, err)
	}
	path := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	for name, data := range c.External {
		// ONNX requires external locations relative to the model, with no "..".
		if !filepath.IsLocal(name) {
			return "", fmt.Errorf("testmodels: %s: external data location %q is not a local relative path", c.Name, name)
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return "", err
		}
	}
	return path, nil
}

// Inputs returns n deterministic samples for the graph input, flattened
// row-major (n*prod(InputShape) values), drawn uniformly from the case's
// typical range: [0, 1) for image-like inputs and for inputs the model
// normalises from pixel scale, [-2, 2) otherwise. Values
// are float32-representable, and float16-representable for float16 models,
// so every element type receives exactly the same numbers.
func (c Case) Inputs(n int, seed uint64) []float64 {
	if n <= 0 {
		return nil
	}
	size := n
	for _, d := range c.InputShape {
		size *= int(d)
	}
	lo, hi := c.inLo, c.inHi
	if lo == 0 && hi == 0 {
		lo, hi = -2, 2
	}
	half := c.inputElem() == tFloat16
	r := rand.New(rand.NewPCG(seed, hash64(c.Name)))
	out := make([]float64, size)
	for i := range out {
		v := float32(lo + (hi-lo)*r.Float64())
		if half {
			v = f16ToF32(f32ToF16(v))
		}
		out[i] = float64(v)
	}
	return out
}

func (c Case) inputElem() onnxpb.TensorProto_DataType {
	if c.Model == nil || len(c.Model.GetGraph().GetInput()) == 0 {
		return tFloat
	}
	tt := c.Model.GetGraph().GetInput()[0].GetType().GetTensorType()
	return onnxpb.TensorProto_DataType(tt.GetElemType())
}

// All returns every case in a stable order. Each call builds fresh models,
// so callers may modify what they get.
func All() []Case {
	cs := make([]Case, 0, len(catalogue))
	for _, e := range catalogue {
		cs = append(cs, e.build(e.name))
	}
	return cs
}

// ByName builds the case with the given name.
func ByName(name string) (Case, bool) {
	for _, e := range catalogue {
		if e.name == name {
			return e.build(e.name), true
		}
	}
	return Case{}, false
}

type entry struct {
	name  string
	build func(name string) Case
}

// finish fills the parts every case shares.
func finish(b *builder, c Case) Case {
	c.Name = b.caseName
	c.Model = b.model()
	if c.Tol == 0 {
		c.Tol = tolFloat32
	}
	return c
}

// ---- shared shapes ----

// actFn adds the activation module at index idx of the Sequential "net" to
// a value of width features.
type actFn func(b *builder, idx int, x string, width int64) string

func netScope(idx int) (scope, param string) {
	p := "net." + strconv.Itoa(idx)
	return "/net/" + p, p
}

// mlp adds torch's nn.Sequential(Linear, act, Linear, act, ..., Linear) on a
// 2-D input: Linear at even indices, the activation between them.
func mlp(b *builder, x string, sizes []int64, act actFn) string {
	idx := 0
	for i := 0; i+1 < len(sizes); i++ {
		if i > 0 {
			x = act(b, idx, x, sizes[i])
			idx++
		}
		scope, param := netScope(idx)
		x = b.linear(scope, param, x, sizes[i], sizes[i+1])
		idx++
	}
	return x
}

// simple wraps an op without attributes as an activation.
func simple(op string) actFn {
	return func(b *builder, idx int, x string, _ int64) string {
		scope, _ := netScope(idx)
		return b.op(op, scope, x)
	}
}

var relu = simple("Relu")

func leakyRelu(alpha float32) actFn {
	return func(b *builder, idx int, x string, _ int64) string {
		scope, _ := netScope(idx)
		return b.opWith("LeakyRelu", scope, func(n *nodeBuilder) { n.f("alpha", alpha) }, x)
	}
}

// prelu: nn.PReLU() has one slope, nn.PReLU(C) one per feature (which
// pruning must slice). Slopes are drawn, as after training: torch's
// initial 0.25 in every layer would make its exporter de-duplicate them into
// one initializer plus Identity nodes (see batchnorm_fresh_identity).
func prelu(perChannel bool) actFn {
	return func(b *builder, idx int, x string, width int64) string {
		scope, param := netScope(idx)
		name := param + ".weight"
		var slope string
		if perChannel {
			slope = b.init(name, []int64{width}, b.uniform(name, width, 0.05, 0.45))
		} else {
			slope = b.init(name, []int64{1}, b.uniform(name, 1, 0.1, 0.4))
		}
		return b.op("PRelu", scope, x, slope)
	}
}

func attrAct(op string, fn func(*nodeBuilder)) actFn {
	return func(b *builder, idx int, x string, _ int64) string {
		scope, _ := netScope(idx)
		return b.opWith(op, scope, fn, x)
	}
}

// geluErf is nn.GELU() below opset 20: x*0.5*(1+erf(x/sqrt2)) exported as
// Div, Erf, Add, Mul(x, .), Mul(., 0.5), each scalar a Constant node placed
// just before its use (checked against torch 1.13, opsets 9-17).
func geluErf(b *builder, idx int, x string, _ int64) string {
	scope, _ := netScope(idx)
	c := b.constant(scope, nil, float64(float32(math.Sqrt2)))
	v := b.op("Div", scope, x, c)
	v = b.op("Erf", scope, v)
	c = b.constant(scope, nil, 1)
	v = b.op("Add", scope, v, c)
	v = b.op("Mul", scope, x, v)
	c = b.constant(scope, nil, 0.5)
	return b.op("Mul", scope, v, c)
}

// geluTanhDecomposed is nn.GELU(approximate="tanh") below opset 20:
// 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))) as torch 1.13 lays it out.
func geluTanhDecomposed(b *builder, idx int, x string, _ int64) string {
	scope, _ := netScope(idx)
	x2 := b.op("Mul", scope, x, x)
	x3 := b.op("Mul", scope, x, x2)
	c := b.constant(scope, nil, 0.044715)
	v := b.op("Mul", scope, c, x3)
	v = b.op("Add", scope, x, v)
	c = b.constant(scope, nil, math.Sqrt(2/math.Pi))
	v = b.op("Mul", scope, c, v)
	v = b.op("Tanh", scope, v)
	c = b.constant(scope, nil, 1)
	v = b.op("Add", scope, c, v)
	v = b.op("Mul", scope, x, v)
	c = b.constant(scope, nil, 0.5)
	return b.op("Mul", scope, c, v)
}

// silu is nn.SiLU(): Sigmoid then Mul(x, sigmoid).
func silu(b *builder, idx int, x string, _ int64) string {
	scope, _ := netScope(idx)
	s := b.op("Sigmoid", scope, x)
	return b.op("Mul", scope, x, s)
}

// Standard sizes: 8 inputs, hidden 16 and 12, 4 outputs (3 layers, 2
// prunable).
var std = []int64{8, 16, 12, 4}

// mlpCase is the common MLP with act between the layers.
func mlpCase(name string, opset int64, act actFn, notes string) Case {
	b := newBuilder(name, opset)
	x := b.input("input", 8)
	b.out(mlp(b, x, std, act), 4)
	return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Notes: notes})
}

func gemmRelu(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		notes := "nn.Sequential(Linear, ReLU, Linear, ReLU, Linear): Gemm(transB=1) + Relu"
		if opset == 9 {
			b.withInitializersAsInputs()
			notes += "; keep_initializers_as_inputs=True: every initializer is also a graph input"
		}
		x := b.input("input", 8)
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

// gemmVariant builds three layers /l1, /l2, /l3 with functional relus
// between them (torch.addmm style modules), each layer made by layer.
func gemmVariant(opset int64, notes string, layer func(b *builder, scope, param, x string, in, out int64) string) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 8)
		for i := 0; i+1 < len(std); i++ {
			if i > 0 {
				x = b.op("Relu", "", x)
			}
			p := "l" + strconv.Itoa(i+1)
			x = layer(b, "/"+p, p, x, std[i], std[i+1])
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

func scale(v []float64, k float64) []float64 {
	out := make([]float64, len(v))
	for i := range v {
		out[i] = float64(float32(v[i] * k))
	}
	return out
}

// ---- the catalogue ----

var catalogue = []entry{
	// Gemm + Relu MLPs across opsets.
	{"gemm_relu_opset9", gemmRelu(9)},
	{"gemm_relu_opset11", gemmRelu(11)},
	{"gemm_relu_opset13", gemmRelu(13)},
	{"gemm_relu_opset17", gemmRelu(17)},
	{"gemm_relu_opset21", gemmRelu(21)},

	// Gemm variants.
	{"gemm_transb0_opset13", gemmVariant(13,
		"torch.addmm(b, x, w): Gemm without transB, W stored [in,out]",
		func(b *builder, scope, param, x string, in, out int64) string {
			w, bias := b.linearWeights(param, in, out)
			wn := b.init(param+".weight", []int64{in, out}, transpose(w, out, in))
			bn := b.init(param+".bias", []int64{out}, bias)
			return b.gemm(scope, x, wn, bn, 1, 1, 0)
		})},
	{"gemm_alpha_beta_opset13", gemmVariant(13,
		"addmm(beta=0.5, alpha=2): Gemm alpha=2, beta=0.5, transB=1; the effective bias is beta*C",
		func(b *builder, scope, param, x string, in, out int64) string {
			w, bias := b.linearWeights(param, in, out)
			wn := b.init(param+".weight", []int64{out, in}, scale(w, 0.5))
			bn := b.init(param+".bias", []int64{out}, scale(bias, 2))
			return b.gemm(scope, x, wn, bn, 2, 0.5, 1)
		})},
	{"gemm_c_row_opset13", gemmVariant(13,
		"Gemm with C of shape [1,out] (broadcast over the batch)",
		func(b *builder, scope, param, x string, in, out int64) string {
			w, bias := b.linearWeights(param, in, out)
			wn := b.init(param+".weight", []int64{out, in}, w)
			bn := b.init(param+".bias", []int64{1, out}, bias)
			return b.gemm(scope, x, wn, bn, 1, 1, 1)
		})},
	{"gemm_c_scalar_opset13", gemmVariant(13,
		"Gemm with a scalar C (shape []): one bias shared by every neuron, to be expanded to [out] when pruning",
		func(b *builder, scope, param, x string, in, out int64) string {
			w, bias := b.linearWeights(param, in, out)
			wn := b.init(param+".weight", []int64{out, in}, w)
			bn := b.init(param+".bias", nil, bias[:1])
			return b.gemm(scope, x, wn, bn, 1, 1, 1)
		})},
	{"gemm_no_c_opset11", gemmVariant(11,
		"Gemm(x, W) without C (optional since opset 11); not torch's shape for bias=False (that is MatMul) but other exporters emit it",
		func(b *builder, scope, param, x string, in, out int64) string {
			w, _ := b.linearWeights(param, in, out)
			wn := b.init(param+".weight", []int64{out, in}, w)
			return b.gemm(scope, x, wn, "", 1, 1, 1)
		})},

	// MatMul forms.
	{"matmul_add_opset13", matmulAddMLP(1,
		"nn.Linear on [N,1,in] (like mnist_mlp_matmul.onnx): MatMul(x, onnx::MatMul_N [in,out]) then Add(bias, mm) with the bias first")},
	{"matmul_add_bias_second_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		for i := 0; i+1 < len(std); i++ {
			if i > 0 {
				x = b.op("Relu", "", x)
			}
			p := "l" + strconv.Itoa(i+1)
			w, bias := b.linearWeights(p, std[i], std[i+1])
			wn := b.init(p+".weight", []int64{std[i], std[i+1]}, transpose(w, std[i+1], std[i]))
			bn := b.init(p+".bias", []int64{std[i+1]}, bias)
			mm := b.op("MatMul", "/"+p, x, wn)
			x = b.op("Add", "/"+p, mm, bn)
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "`x @ w + b` with parameters w [in,out], b: MatMul then Add(mm, bias) with the bias second, on a 2-D input"})
	}},
	{"matmul_add_seq_opset13", matmulAddMLP(4,
		"nn.Linear on [N,T,C] with T=4: MatMul + Add(bias, mm); features are the last axis, T acts as extra batch")},
	{"matmul_transpose_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		for i := 0; i+1 < len(std); i++ {
			if i > 0 {
				x = b.op("Relu", "", x)
			}
			p := "l" + strconv.Itoa(i+1)
			w, bias := b.linearWeights(p, std[i], std[i+1])
			wn := b.init(p+".weight", []int64{std[i+1], std[i]}, w)
			bn := b.init(p+".bias", []int64{std[i+1]}, bias)
			t := b.opWith("Transpose", "/"+p, func(n *nodeBuilder) { n.ints("perm", 1, 0) }, wn)
			mm := b.op("MatMul", "/"+p, x, t)
			x = b.op("Add", "/"+p, mm, bn)
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "`x @ w.t() + b` exported without constant folding: MatMul(x, Transpose(perm=[1,0]) of a [out,in] initializer), Add(mm, bias)"})
	}},
	{"matmul_nobias_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		idx := 0
		for i := 0; i+1 < len(std); i++ {
			if i > 0 {
				x = relu(b, idx, x, std[i])
				idx++
			}
			scope, param := netScope(idx)
			if i+2 < len(std) {
				wt, _ := b.matmulWeight(param, std[i], std[i+1])
				x = b.op("MatMul", scope, x, wt)
			} else {
				x = b.linear(scope, param, x, std[i], std[i+1])
			}
			idx++
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "nn.Linear(bias=False) hidden layers: bare MatMul(x, onnx::MatMul_N [in,out]) even on a 2-D input; the head has a bias (Gemm)"})
	}},

	// Activations between layers.
	{"leakyrelu_a001_opset13", func(n string) Case {
		return mlpCase(n, 13, leakyRelu(0.01), "LeakyRelu(alpha=0.01), torch's default slope")
	}},
	{"leakyrelu_a02_opset13", func(n string) Case { return mlpCase(n, 13, leakyRelu(0.2), "LeakyRelu(alpha=0.2)") }},
	{"prelu_shared_opset13", func(n string) Case {
		return mlpCase(n, 13, prelu(false), "nn.PReLU(): PRelu with a one-element slope initializer of shape [1] per layer (net.1.weight, net.3.weight), broadcast over the features")
	}},
	{"prelu_channel_opset13", func(n string) Case {
		return mlpCase(n, 13, prelu(true), "nn.PReLU(C): PRelu with a per-feature slope initializer of shape [out], to be sliced when pruning")
	}},
	{"tanh_opset13", func(n string) Case { return mlpCase(n, 13, simple("Tanh"), "Tanh (like pde_mlp.onnx)") }},
	{"sigmoid_opset13", func(n string) Case { return mlpCase(n, 13, simple("Sigmoid"), "Sigmoid") }},
	{"hardsigmoid_opset13", func(n string) Case {
		return mlpCase(n, 13, attrAct("HardSigmoid", func(nb *nodeBuilder) { nb.f("alpha", 1.0/6) }),
			"nn.Hardsigmoid: HardSigmoid(alpha=1/6), beta left at its default 0.5 as torch does")
	}},
	{"hardswish_opset14", func(n string) Case {
		return mlpCase(n, 14, simple("HardSwish"), "nn.Hardswish at opset 14: the HardSwish op (below 14 torch emits HardSigmoid + Mul)")
	}},
	{"elu_opset13", func(n string) Case {
		return mlpCase(n, 13, attrAct("Elu", func(nb *nodeBuilder) { nb.f("alpha", 1) }), "Elu(alpha=1)")
	}},
	{"selu_opset13", func(n string) Case { return mlpCase(n, 13, simple("Selu"), "Selu with default attributes") }},
	{"softplus_opset13", func(n string) Case { return mlpCase(n, 13, simple("Softplus"), "Softplus") }},
	{"gelu_opset20", func(n string) Case {
		return mlpCase(n, 20, attrAct("Gelu", func(nb *nodeBuilder) { nb.s("approximate", "none") }),
			"nn.GELU() at opset 20: the Gelu op with approximate=\"none\"")
	}},
	{"gelu_tanh_opset20", func(n string) Case {
		return mlpCase(n, 20, attrAct("Gelu", func(nb *nodeBuilder) { nb.s("approximate", "tanh") }),
			"nn.GELU(approximate=\"tanh\") at opset 20: the Gelu op with approximate=\"tanh\"")
	}},
	{"gelu_erf_opset13", func(n string) Case {
		return mlpCase(n, 13, geluErf, "nn.GELU() below opset 20: Div(x, Constant sqrt2), Erf, Add(., Constant 1), Mul(x, .), Mul(., Constant 0.5)")
	}},
	{"gelu_tanh_decomposed_opset13", func(n string) Case {
		return mlpCase(n, 13, geluTanhDecomposed, "nn.GELU(approximate=\"tanh\") below opset 20: Mul(x,x), Mul(x,.), Mul(Constant 0.044715,.), Add(x,.), Mul(Constant sqrt(2/pi),.), Tanh, Add(Constant 1,.), Mul(x,.), Mul(Constant 0.5,.)")
	}},
	{"silu_opset13", func(n string) Case {
		return mlpCase(n, 13, silu, "nn.SiLU: Sigmoid(x) then Mul(x, sigmoid) (x used twice)")
	}},

	// Per-feature and shape-only ops.
	{"batchnorm_opset13", batchNorm(13, false)},
	{"batchnorm_opset15", batchNorm(15, false)},
	{"batchnorm_fresh_identity_opset13", batchNorm(13, true)},
	{"dropout_opset13", dropout(false)},
	{"dropout_ratio_opset13", dropout(true)},
	{"identity_opset13", seqWithMiddle("Identity", func(b *builder, scope, x string) string {
		return b.op("Identity", scope, x)
	}, "Identity between layers (torch drops nn.Identity itself; other tools leave these)")},
	{"cast_opset13", seqWithMiddle("Cast", func(b *builder, scope, x string) string {
		return b.opWith("Cast", scope, func(n *nodeBuilder) { n.i("to", int64(tFloat)) }, x)
	}, "x.float() on a float tensor: Cast(to=FLOAT) between layers, a no-op torch does not fold")},
	{"flatten_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 1, 5, 5)
		x = b.opWith("Flatten", "/net/net.0", func(n *nodeBuilder) { n.i("axis", 1) }, x)
		sizes := []int64{25, 16, 12, 4}
		idx := 1
		for i := 0; i+1 < len(sizes); i++ {
			if i > 0 {
				x = relu(b, idx, x, sizes[i])
				idx++
			}
			scope, param := netScope(idx)
			x = b.linear(scope, param, x, sizes[i], sizes[i+1])
			idx++
		}
		b.out(x, 4)
		return finish(b, Case{InputShape: []int64{1, 5, 5}, Layers: 3, Prunable: 2, inLo: 0, inHi: 1,
			Notes: "nn.Flatten() first on an image-like [N,1,5,5] input (MNIST's [N,1,28,28] shrunk): Flatten(axis=1) to 25 features"})
	}},
	{"view_batch_opset13", viewCase(13)},
	{"view_batch_opset11", viewCase(11)},
	{"reshape_initializer_opset13", reshapeCase(false)},
	{"reshape_constant_opset13", reshapeCase(true)},
	{"squeeze_unsqueeze_opset13", squeezeCase(13)},
	{"squeeze_unsqueeze_opset11", squeezeCase(11)},

	// Elementwise ops with constants.
	{"normalize_initializer_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		mean := b.init("mean", []int64{8}, b.uniform("mean", 8, -0.5, 0.5))
		sd := b.init("std", []int64{8}, b.uniform("std", 8, 0.5, 1.5))
		x = b.op("Sub", "", x, mean)
		x = b.op("Div", "", x, sd)
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "input normalisation (x - mean) / std with registered buffers: Sub and Div by [8] initializers before the first Gemm"})
	}},
	{"normalize_constant_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x = b.op("Sub", "", x, b.constant("", nil, 0.5))
		x = b.op("Div", "", x, b.constant("", nil, 0.25))
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, inLo: 0, inHi: 1,
			Notes: "(x - 0.5) / 0.25 with Python scalars: Sub and Div by scalar Constant nodes"})
	}},
	{"elementwise_between_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x = b.linear("/l1", "l1", x, 8, 16)
		x = b.op("Relu", "", x)
		x = b.op("Mul", "", x, b.init("scale", []int64{16}, b.uniform("scale", 16, 0.5, 1.5)))
		x = b.op("Add", "", b.init("shift", []int64{16}, b.uniform("shift", 16, -0.5, 0.5)), x)
		x = b.op("Sub", "", x, b.constant("", nil, 0.1))
		x = b.op("Div", "", x, b.constant("", nil, 2))
		x = b.linear("/l2", "l2", x, 16, 12)
		x = b.op("Relu", "", x)
		x = b.op("Mul", "", x, b.constant("", nil, 1.5))
		b.out(b.linear("/l3", "l3", x, 12, 4), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "between layers: Mul by a [16] initializer, Add(shift [16], h) with the constant first, Sub and Div by scalar Constants, Mul by a scalar Constant"})
	}},
	{"constant_first_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x = b.op("Sub", "", b.constant("", nil, 1), x)
		x = b.op("Add", "", x, b.constant("", nil, 3))
		x = b.op("Div", "", b.constant("", []int64{8}, ones(8, 2)...), x)
		x = b.linear("/l1", "l1", x, 8, 16)
		x = b.op("Relu", "", x)
		x = b.op("Sub", "", b.init("offset", []int64{16}, b.uniform("offset", 16, -0.5, 0.5)), x)
		x = b.linear("/l2", "l2", x, 16, 12)
		x = b.op("Relu", "", x)
		x = b.linear("/l3", "l3", x, 12, 4)
		b.out(b.op("Mul", "", b.init("gain", []int64{4}, b.uniform("gain", 4, 0.5, 1.5)), x), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "constants as the first operand: Sub(Constant 1, x) (torch's rsub for 1.0 - x), Add(., Constant 3), Div(Constant [8], .) (torch.full((8,), 2.0) / x; a Python scalar would give Reciprocal+Mul), Sub(offset [16], h) between layers (negates h), Mul(gain [4], y) after the head"})
	}},

	// Branches and heads.
	{"residual_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x1 := b.op("Relu", "", b.linear("/l1", "l1", x, 8, 16))
		x2 := b.linear("/l2", "l2", x1, 16, 16)
		s := b.op("Add", "", x1, x2)
		b.out(b.linear("/l3", "l3", s, 16, 4), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 0,
			Notes: "x1 = relu(l1(x)); l3(x1 + l2(x1)): the residual Add ties l1's and l2's neurons together, so neither can lose one alone"})
	}},
	{"softmax_opset11", softmaxCase("Softmax", 11)},
	{"logsoftmax_opset11", softmaxCase("LogSoftmax", 11)},
	{"softmax_opset13", softmaxCase("Softmax", 13)},
	{"logsoftmax_opset13", softmaxCase("LogSoftmax", 13)},
	{"two_heads_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		h := b.linear("/trunk/trunk.0", "trunk.0", x, 8, 16)
		h = b.op("Relu", "/trunk/trunk.1", h)
		h = b.linear("/trunk/trunk.2", "trunk.2", h, 16, 12)
		h = b.op("Relu", "/trunk/trunk.3", h)
		ya := b.linear("/a", "a", h, 12, 3)
		yb := b.linear("/b", "b", h, 12, 2)
		b.out(ya, 3).output(yb, "output2", tFloat, true, 2)
		return finish(b, Case{InputShape: []int64{8}, Layers: 4, Prunable: 2,
			Notes: "shared trunk (2 layers) and two heads, graph outputs \"output\" [N,3] and \"output2\" [N,2]; trunk.2 feeds both heads, so pruning it removes a column from each"})
	}},

	// Element types and storage.
	{"float16_opset13", func(name string) Case {
		b := newBuilder(name, 13).withElem(tFloat16)
		x := b.input("input", 8)
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Tol: tolFloat16,
			Notes: "model.half(): input, weights, compute and output all float16; Tol 2e-3 for float16 rounding at every op"})
	}},
	{"float64_opset13", func(name string) Case {
		b := newBuilder(name, 13).withElem(tDouble)
		x := b.input("input", 8)
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "model.double(): input, weights, compute and output all float64"})
	}},
	{"float_data_opset11", func(name string) Case {
		b := newBuilder(name, 11).withTypedFields()
		x := b.input("input", 8)
		b.out(mlp(b, x, std, relu), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: "initializers in the typed float_data field instead of raw_data (older exporters)"})
	}},
	{"external_data_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 16)
		b.out(mlp(b, x, []int64{16, 32, 32, 4}, relu), 4)
		c := finish(b, Case{InputShape: []int64{16}, Layers: 3, Prunable: 2,
			Notes: "initializers of >= 1 KiB (net.0.weight 2 KiB, net.2.weight 4 KiB) in external file weights.bin at 4096-aligned offsets; the rest inline"})
		c.External = map[string][]byte{"weights.bin": externalize(c.Model, "weights.bin", 1024, 4096)}
		return c
	}},

	// Unprunable and unsupported.
	{"tied_weight_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x = b.op("Relu", "", b.linear("/fc0", "fc0", x, 8, 16))
		x = b.op("Relu", "", b.linear("/fc1", "fc1", x, 16, 12))
		x = b.op("Relu", "", b.linear("/fc2", "fc2", x, 12, 12))
		// fc3.weight is fc2.weight: torch writes the shared tensor once.
		_, bias := b.linearWeights("fc3", 12, 12)
		bn := b.init("fc3.bias", []int64{12}, bias)
		x = b.op("Relu", "", b.gemm("/fc3", x, "fc2.weight", bn, 1, 1, 1))
		b.out(b.linear("/head", "head", x, 12, 4), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 5, Prunable: 1,
			Notes: "weight tying: fc3 uses fc2.weight (one initializer, two Gemms; its weights are pruned as one tensor); fc2 and fc3 cannot lose neurons, fc1 cannot either (its consumer's weight is tied); only fc0 is prunable"})
	}},
	{"weight_output_opset13", weightOutput(false)},
	{"weight_output_direct_opset13", weightOutput(true)},
	{"conv_head_opset13", func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 1, 6, 6)
		cw := b.init("c.weight", []int64{2, 1, 3, 3}, b.uniform("c.weight", 18, -math.Sqrt(3.0/9), math.Sqrt(3.0/9)))
		cb := b.init("c.bias", []int64{2}, b.uniform("c.bias", 2, -1.0/3, 1.0/3))
		x = b.opWith("Conv", "/c", func(n *nodeBuilder) {
			n.ints("dilations", 1, 1).i("group", 1).ints("kernel_shape", 3, 3).ints("pads", 0, 0, 0, 0).ints("strides", 1, 1)
		}, x, cw, cb)
		x = b.op("Relu", "", x)
		x = b.opWith("Flatten", "/f", func(n *nodeBuilder) { n.i("axis", 1) }, x)
		x = b.linear("/net/net.0", "net.0", x, 32, 12)
		x = b.op("Relu", "/net/net.1", x)
		b.out(b.linear("/net/net.2", "net.2", x, 12, 4), 4)
		return finish(b, Case{InputShape: []int64{1, 6, 6}, Layers: 2, Prunable: 1, inLo: 0, inHi: 1,
			Notes: "Conv(1->2, 3x3) + Relu + Flatten in front of a 2-layer MLP head"})
	}},
	{"quantized_matmulinteger_opset13", quantDynamic},
	{"quantized_qlinearmatmul_opset13", quantStatic},
}

// seqWithMiddle is Linear, ReLU, <middle>, Linear, ReLU, Linear with the
// middle module at index 2.
func seqWithMiddle(op string, middle func(b *builder, scope, x string) string, notes string) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		x = b.linear("/net/net.0", "net.0", x, 8, 16)
		x = b.op("Relu", "/net/net.1", x)
		x = middle(b, "/net/net.2", x)
		x = b.linear("/net/net.3", "net.3", x, 16, 12)
		x = b.op("Relu", "/net/net.4", x)
		b.out(b.linear("/net/net.5", "net.5", x, 12, 4), 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

// batchNorm: Linear, BatchNorm1d, ReLU, Linear, ReLU, Linear in eval mode.
// torch does not fold BatchNorm into Gemm. fresh imitates an untrained
// BatchNorm1d: running_var equals weight (ones) and running_mean equals bias
// (zeros), and torch's exporter de-duplicates equal initializers by feeding
// them through Identity nodes placed first in the graph.
func batchNorm(opset int64, fresh bool) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 8)
		x = b.linear("/net/net.0", "net.0", x, 8, 16)
		var wn, bn, mn, vn string
		if fresh {
			wn = b.init("net.1.weight", []int64{16}, ones(16, 1))
			bn = b.init("net.1.bias", []int64{16}, ones(16, 0))
			b.atFront(func() {
				vn = b.node("Identity", "", wn).named("Identity_0").outputs("net.1.running_var").done()[0]
				mn = b.node("Identity", "", bn).named("Identity_1").outputs("net.1.running_mean").done()[0]
			})
		} else {
			wn = b.init("net.1.weight", []int64{16}, b.uniform("net.1.weight", 16, 0.5, 1.5))
			bn = b.init("net.1.bias", []int64{16}, b.uniform("net.1.bias", 16, -0.2, 0.2))
			mn = b.init("net.1.running_mean", []int64{16}, b.uniform("net.1.running_mean", 16, -0.2, 0.2))
			vn = b.init("net.1.running_var", []int64{16}, b.uniform("net.1.running_var", 16, 0.5, 1.5))
		}
		x = b.opWith("BatchNormalization", "/net/net.1", func(n *nodeBuilder) {
			n.f("epsilon", 1e-5).f("momentum", 0.9)
			if opset >= 15 {
				n.i("training_mode", 0)
			}
		}, x, wn, bn, mn, vn)
		x = b.op("Relu", "/net/net.2", x)
		x = b.linear("/net/net.3", "net.3", x, 16, 12)
		x = b.op("Relu", "/net/net.4", x)
		b.out(b.linear("/net/net.5", "net.5", x, 12, 4), 4)
		notes := "BatchNorm1d(16) in eval mode after the first Gemm: BatchNormalization(scale, B, mean, var) with epsilon=1e-5, momentum=0.9"
		if opset >= 15 {
			notes += ", training_mode=0 (written from opset 15)"
		}
		if fresh {
			notes = "untrained BatchNorm1d: torch de-duplicates equal initializers, so running_var and running_mean come from Identity(net.1.weight) and Identity(net.1.bias) nodes at the start of the graph; weight 1, bias 0"
		}
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

func ones(n int, v float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// dropout: Linear, ReLU, Dropout, Linear, ReLU, Linear. torch removes
// Dropout from eval exports; other tools keep it, either bare or with
// ratio and training_mode=false inputs and an unused mask output.
func dropout(withInputs bool) func(string) Case {
	return func(name string) Case {
		notes := "Dropout(x) with ratio and training_mode omitted (inference: identity)"
		if withInputs {
			notes = "Dropout(x, Constant ratio 0.5, Constant training_mode false) with an unused mask output (inference: identity)"
		}
		return seqWithMiddle("Dropout", func(b *builder, scope, x string) string {
			if !withInputs {
				return b.op("Dropout", scope, x)
			}
			ratio := b.constant(scope, nil, 0.5)
			tm := b.constantT(scope, b.tensor("", tBool, nil, []float64{0}))
			return b.node("Dropout", scope, x, ratio, tm).outputs("", "").done()[0]
		}, notes)(name)
	}
}

// reshapeCase: input [N,4,4] reshaped to [-1,16] by x.reshape(-1, 16), the
// shape an initializer (older exports) or a Constant node (torch 1.13).
func reshapeCase(constant bool) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 4, 4)
		var shape string
		if constant {
			shape = b.constantInt64("", -1, 16)
		} else {
			shape = b.initT("onnx::Reshape_9", tInt64, []int64{2}, []float64{-1, 16})
		}
		x = b.op("Reshape", "", x, shape)
		sizes := []int64{16, 16, 12, 4}
		b.out(mlp(b, x, sizes, relu), 4)
		notes := "x.reshape(-1, 16) on [N,4,4]: Reshape with an int64 shape initializer [-1,16]"
		if constant {
			notes = "x.reshape(-1, 16) on [N,4,4]: Reshape with the shape [-1,16] from a Constant node (torch 1.13's layout)"
		}
		return finish(b, Case{InputShape: []int64{4, 4}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

// viewCase: x.view(x.size(0), -1) on [N,4,4] as torch exports it, the
// target shape computed from x's batch size: Shape -> Gather(0) ->
// Unsqueeze(axis 0) -> Concat with [-1] -> Reshape. Unsqueeze takes its
// axes as an input from opset 13, as an attribute before.
func viewCase(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 4, 4)
		shape := b.op("Shape", "", x)
		idx := b.constantT("", b.tensor("", tInt64, []int64{}, []float64{0}))
		n := b.opWith("Gather", "", func(nb *nodeBuilder) { nb.i("axis", 0) }, shape, idx)
		if opset >= 13 {
			n = b.op("Unsqueeze", "", n, b.constantInt64("", 0))
		} else {
			n = b.opWith("Unsqueeze", "", func(nb *nodeBuilder) { nb.ints("axes", 0) }, n)
		}
		target := b.opWith("Concat", "", func(nb *nodeBuilder) { nb.i("axis", 0) }, n, b.constantInt64("", -1))
		x = b.op("Reshape", "", x, target)
		sizes := []int64{16, 16, 12, 4}
		b.out(mlp(b, x, sizes, relu), 4)
		return finish(b, Case{InputShape: []int64{4, 4}, Layers: 3, Prunable: 2,
			Notes: "x.view(x.size(0), -1) on [N,4,4]: the target shape computed at run time from x's batch size (Shape, Gather, Unsqueeze, Concat), as torch exports it"})
	}
}

// squeezeCase: input [N,1,8] squeezed on axis 1, an MLP, output unsqueezed
// back to [N,1,4]. Axes are an input from opset 13, an attribute before.
func squeezeCase(opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 1, 8)
		if opset >= 13 {
			x = b.op("Squeeze", "", x, b.constantInt64("", 1))
		} else {
			x = b.opWith("Squeeze", "", func(n *nodeBuilder) { n.ints("axes", 1) }, x)
		}
		y := mlp(b, x, std, relu)
		if opset >= 13 {
			y = b.op("Unsqueeze", "", y, b.constantInt64("", 1))
		} else {
			y = b.opWith("Unsqueeze", "", func(n *nodeBuilder) { n.ints("axes", 1) }, y)
		}
		b.out(y, 1, 4)
		notes := "x.squeeze(1) before and .unsqueeze(1) after the MLP; axes as a Constant input (opset 13)"
		if opset < 13 {
			notes = "x.squeeze(1) before and .unsqueeze(1) after the MLP; axes as an attribute (opset 11)"
		}
		return finish(b, Case{InputShape: []int64{1, 8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}

// softmaxCase ends the standard MLP with op (Softmax or LogSoftmax): axis=1
// at opset 11 (where the op flattens from the axis on), axis=-1 from 13.
func softmaxCase(op string, opset int64) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, opset)
		x := b.input("input", 8)
		y := mlp(b, x, std, relu)
		axis := int64(-1)
		if opset < 13 {
			axis = 1
		}
		y = b.opWith(op, "/net/net.5", func(n *nodeBuilder) { n.i("axis", axis) }, y)
		b.out(y, 4)
		return finish(b, Case{InputShape: []int64{8}, Layers: 3, Prunable: 2,
			Notes: fmt.Sprintf("%s(axis=%d) after the last Gemm", op, axis)})
	}
}

// weightOutput: a 4-layer MLP that also returns net.4.weight (the third
// layer's weight). torch writes Identity(net.4.weight) -> graph output
// "weight"; direct lists the initializer itself as the graph output.
func weightOutput(direct bool) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", 8)
		b.out(mlp(b, x, []int64{8, 16, 12, 10, 4}, relu), 4)
		notes := "model returning (y, net.4.weight): torch exports Identity(net.4.weight) -> graph output \"weight\" [10,12]"
		if direct {
			b.output("net.4.weight", "net.4.weight", tFloat, false, 10, 12)
			notes = "the initializer net.4.weight [10,12] is itself the second graph output"
		} else {
			w := b.node("Identity", "", "net.4.weight").named("Identity_7").done()[0] // torch numbers it
			b.output(w, "weight", tFloat, false, 10, 12)
		}
		notes += "; net.4 cannot lose neurons nor net.2 (it feeds net.4), net.0 stays prunable"
		return finish(b, Case{InputShape: []int64{8}, Layers: 4, Prunable: 1, Notes: notes})
	}
}

// quantize returns int8 values of w with a symmetric per-tensor scale.
func quantize(w []float64) (q []float64, scale float64) {
	m := 0.0
	for _, v := range w {
		m = max(m, math.Abs(v))
	}
	scale = float64(float32(m / 127))
	q = make([]float64, len(w))
	for i, v := range w {
		q[i] = math.Max(-127, math.Min(127, math.Round(v/scale)))
	}
	return q, scale
}

// quantDynamic is what onnxruntime.quantization.quantize_dynamic makes of
// the last layer: DynamicQuantizeLinear on the activations, MatMulInteger
// with int8 weights, Cast to float, rescale by the product of the scales,
// bias Add.
func quantDynamic(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 8)
	x = b.linear("/net/net.0", "net.0", x, 8, 16)
	x = b.op("Relu", "/net/net.1", x)
	w, bias := b.linearWeights("net.2", 16, 4)
	q, s := quantize(transpose(w, 4, 16))
	wq := b.initT("net.2.weight_quantized", tInt8, []int64{16, 4}, q)
	ws := b.init("net.2.weight_scale", nil, []float64{s})
	wz := b.initT("net.2.weight_zero_point", tInt8, nil, []float64{0})
	dq := b.node("DynamicQuantizeLinear", "/net/net.2", x).outputs("", "", "").done()
	mm := b.op("MatMulInteger", "/net/net.2", dq[0], wq, dq[2], wz)
	f := b.opWith("Cast", "/net/net.2", func(n *nodeBuilder) { n.i("to", int64(tFloat)) }, mm)
	sc := b.op("Mul", "/net/net.2", dq[1], ws)
	y := b.op("Mul", "/net/net.2", f, sc)
	y = b.op("Add", "/net/net.2", y, b.init("net.2.bias", []int64{4}, bias))
	b.out(y, 4)
	return finish(b, Case{InputShape: []int64{8}, Layers: 1, Prunable: 0, Unsupported: "MatMulInteger",
		Notes: "dynamic int8 quantization of the head (onnxruntime quantize_dynamic layout): DynamicQuantizeLinear, MatMulInteger(uint8 x, int8 W [16,4]), Cast, Mul by scales, Add bias; DynamicQuantizeLinear comes first in node order"})
}

// quantStatic is the QOperator form of a statically quantized head:
// QuantizeLinear, QLinearMatMul with int8 weights, DequantizeLinear.
func quantStatic(name string) Case {
	b := newBuilder(name, 13)
	x := b.input("input", 8)
	x = b.linear("/net/net.0", "net.0", x, 8, 16)
	x = b.op("Relu", "/net/net.1", x)
	w, _ := b.linearWeights("net.2", 16, 4)
	q, s := quantize(transpose(w, 4, 16))
	xs := b.init("input_scale", nil, []float64{float64(float32(4.0 / 255))})
	xz := b.initT("input_zero_point", tUint8, nil, []float64{0})
	wq := b.initT("net.2.weight_quantized", tInt8, []int64{16, 4}, q)
	ws := b.init("net.2.weight_scale", nil, []float64{s})
	wz := b.initT("net.2.weight_zero_point", tInt8, nil, []float64{0})
	ys := b.init("output_scale", nil, []float64{float64(float32(8.0 / 255))})
	yz := b.initT("output_zero_point", tUint8, nil, []float64{128})
	xq := b.op("QuantizeLinear", "/net/net.2", x, xs, xz)
	yq := b.op("QLinearMatMul", "/net/net.2", xq, xs, xz, wq, ws, wz, ys, yz)
	y := b.op("DequantizeLinear", "/net/net.2", yq, ys, yz)
	b.out(y, 4)
	return finish(b, Case{InputShape: []int64{8}, Layers: 1, Prunable: 0, Unsupported: "QLinearMatMul",
		Notes: "static int8 quantization of the head (QOperator layout): QuantizeLinear, QLinearMatMul(uint8 x, int8 W [16,4]), DequantizeLinear; QuantizeLinear comes first in node order"})
}

// externalize moves every initializer whose raw data has at least
// threshold bytes into one external file (returned), at offsets aligned to
// align bytes, as onnx.save_model(..., save_as_external_data=True) does.
func externalize(m *onnxpb.ModelProto, location string, threshold, align int) []byte {
	var file []byte
	for _, t := range m.GetGraph().GetInitializer() {
		if len(t.RawData) < threshold {
			continue
		}
		for len(file)%align != 0 {
			file = append(file, 0)
		}
		off := len(file)
		file = append(file, t.RawData...)
		t.ExternalData = []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String(location)},
			{Key: proto.String("offset"), Value: proto.String(strconv.Itoa(off))},
			{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(t.RawData)))},
		}
		t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		t.RawData = nil
	}
	return file
}

// matmulAddMLP is the std MLP exported as MatMul + Add(bias, mm) on an
// input [N, T, 8]: what torch emits for nn.Linear on inputs of rank 3.
func matmulAddMLP(t int64, notes string) func(string) Case {
	return func(name string) Case {
		b := newBuilder(name, 13)
		x := b.input("input", t, 8)
		for i := 0; i+1 < len(std); i++ {
			if i > 0 {
				scope, _ := netScope(2*i - 1)
				x = b.op("Relu", scope, x)
			}
			scope, param := netScope(2 * i)
			x = b.linearMatMul(scope, param, x, std[i], std[i+1], true)
		}
		b.out(x, t, 4)
		return finish(b, Case{InputShape: []int64{t, 8}, Layers: 3, Prunable: 2, Notes: notes})
	}
}
