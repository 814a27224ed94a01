package testmodels

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Element types used by the catalogue (TensorProto.DataType values).
const (
	tFloat   = onnxpb.TensorProto_FLOAT
	tFloat16 = onnxpb.TensorProto_FLOAT16
	tDouble  = onnxpb.TensorProto_DOUBLE
	tInt64   = onnxpb.TensorProto_INT64
	tInt8    = onnxpb.TensorProto_INT8
	tUint8   = onnxpb.TensorProto_UINT8
	tBool    = onnxpb.TensorProto_BOOL
)

// builder assembles one model the way torch.onnx.export lays it out: node
// names "/scope/Op" made unique with "_1", "_2" suffixes, node outputs named
// "<node>_output_<i>", the last value renamed to the graph output, weights
// under their state_dict names. Its methods panic on programmer errors only
// (a duplicated or unknown value name); the catalogue is fixed, so such a
// panic shows up in this package's own tests.
type builder struct {
	caseName      string
	opset         int64
	elem          onnxpb.TensorProto_DataType // float type of input, weights and compute
	typed         bool                        // float_data & co. instead of raw_data
	initsAsInputs bool                        // opset-9 keep_initializers_as_inputs=True
	g             *onnxpb.GraphProto
	defined       map[string]bool // every value name: graph inputs, initializers, node outputs
	nodeName      map[string]bool
	matmulID      int // numbering of folded "onnx::MatMul_N" weights, as torch does
}

func newBuilder(caseName string, opset int64) *builder {
	return &builder{
		caseName: caseName,
		opset:    opset,
		elem:     tFloat,
		g:        &onnxpb.GraphProto{Name: proto.String(graphName(opset))},
		defined:  map[string]bool{},
		nodeName: map[string]bool{},
		matmulID: 18,
	}
}

// graphName is the graph name torch's TorchScript exporter writes: torch 1.x
// wrote "torch_jit", torch 2.x (needed for opset >= 18) writes "main_graph".
func graphName(opset int64) string {
	if opset >= 18 {
		return "main_graph"
	}
	return "torch_jit"
}

// irVersion is the IR version torch pairs with an opset (torch's
// kOpsetVersionToIRVersion table, extended with the IR version ONNX
// released alongside opsets 18-21). Checked against torch 1.13 for 9-17.
func irVersion(opset int64) int64 {
	switch {
	case opset <= 8:
		return 3
	case opset == 9:
		return 4
	case opset == 10:
		return 5
	case opset == 11:
		return 6
	case opset <= 14:
		return 7
	case opset <= 18:
		return 8
	case opset <= 20:
		return 9
	default:
		return 10
	}
}

func producerVersion(opset int64) string {
	switch {
	case opset <= 17:
		return "1.13.0"
	case opset <= 20:
		return "2.2.0"
	default:
		return "2.5.0"
	}
}

func (b *builder) withElem(t onnxpb.TensorProto_DataType) *builder { b.elem = t; return b }
func (b *builder) withTypedFields() *builder                       { b.typed = true; return b }
func (b *builder) withInitializersAsInputs() *builder              { b.initsAsInputs = true; return b }

func (b *builder) define(name string) {
	if name == "" || b.defined[name] {
		panic(fmt.Sprintf("testmodels: %s: value %q defined twice or empty", b.caseName, name))
	}
	b.defined[name] = true
}

// uniqueNodeName makes base unique the way torch does: "/Relu", "/Relu_1".
func (b *builder) uniqueNodeName(base string) string {
	name := base
	for i := 1; b.nodeName[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	b.nodeName[name] = true
	return name
}

// input declares the graph input with a dynamic batch dimension "N" in front
// of dims.
func (b *builder) input(name string, dims ...int64) string {
	b.define(name)
	b.g.Input = append(b.g.Input, valueInfo(name, b.elem, true, dims))
	return name
}

// output makes value v the graph output name (with a leading "N" batch
// dimension when batched). Like torch, the producing node's output is
// renamed; an initializer name (v == name) is listed as it is.
func (b *builder) output(v, name string, elem onnxpb.TensorProto_DataType, batched bool, dims ...int64) *builder {
	if !b.defined[v] {
		panic(fmt.Sprintf("testmodels: %s: output of unknown value %q", b.caseName, v))
	}
	if v != name {
		b.define(name)
		for _, n := range b.g.Node {
			for i := range n.Output {
				if n.Output[i] == v {
					n.Output[i] = name
				}
			}
			for i := range n.Input {
				if n.Input[i] == v {
					n.Input[i] = name
				}
			}
		}
		delete(b.defined, v)
	}
	b.g.Output = append(b.g.Output, valueInfo(name, elem, batched, dims))
	return b
}

// out is output for the usual case: value v becomes the batched graph
// output "output" of the builder's float type.
func (b *builder) out(v string, dims ...int64) *builder {
	return b.output(v, "output", b.elem, true, dims...)
}

func valueInfo(name string, elem onnxpb.TensorProto_DataType, batched bool, dims []int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	if batched {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{
			Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}})
	}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{
			Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(elem)),
			Shape:    shape,
		}}},
	}
}

// model finishes the graph into a ModelProto with torch's header fields.
// Initializers are put in torch's order: the state_dict order (the root
// module's own parameters and buffers, then its children's), with folded
// constants ("onnx::..." names) last. Builders create tensors in module
// order, so only the root-level names need moving to the front.
func (b *builder) model() *onnxpb.ModelProto {
	rank := func(t *onnxpb.TensorProto) int {
		switch name := t.GetName(); {
		case strings.HasPrefix(name, "onnx::"):
			return 2
		case !strings.Contains(name, "."):
			return 0
		}
		return 1
	}
	slices.SortStableFunc(b.g.Initializer, func(x, y *onnxpb.TensorProto) int { return rank(x) - rank(y) })
	if b.initsAsInputs {
		for _, t := range b.g.Initializer {
			b.g.Input = append(b.g.Input, valueInfo(t.GetName(), onnxpb.TensorProto_DataType(t.GetDataType()), false, t.Dims))
		}
	}
	return &onnxpb.ModelProto{
		IrVersion:       proto.Int64(irVersion(b.opset)),
		ProducerName:    proto.String("pytorch"),
		ProducerVersion: proto.String(producerVersion(b.opset)),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Version: proto.Int64(b.opset)}},
		Graph:           b.g,
	}
}

// atFront runs fn and moves the nodes it added to the start of the graph,
// where torch puts the Identity nodes of de-duplicated initializers.
func (b *builder) atFront(fn func()) {
	n := len(b.g.Node)
	fn()
	added := slices.Clone(b.g.Node[n:])
	b.g.Node = append(added, b.g.Node[:n]...)
}

// ---- nodes ----

// nodeBuilder adds one node fluently: b.node("Gemm", "/net/net.0", x, w,
// bias).f("alpha", 1).i("transB", 1).out().
type nodeBuilder struct {
	b     *builder
	scope string
	n     *onnxpb.NodeProto
	outs  []string
}

// node starts a node of type op named scope+"/"+op (made unique).
func (b *builder) node(op, scope string, inputs ...string) *nodeBuilder {
	for _, in := range inputs {
		if in != "" && !b.defined[in] {
			panic(fmt.Sprintf("testmodels: %s: %s input %q is not defined", b.caseName, op, in))
		}
	}
	// The name is fixed in done, so that named can override it.
	return &nodeBuilder{b: b, scope: scope, n: &onnxpb.NodeProto{
		OpType: proto.String(op),
		Input:  inputs,
	}, outs: []string{""}}
}

// named gives the node an explicit name (torch's "Identity_0" style).
func (nb *nodeBuilder) named(name string) *nodeBuilder {
	nb.n.Name = proto.String(nb.b.uniqueNodeName(name))
	return nb
}

// outputs sets explicit output names ("" keeps the default name).
func (nb *nodeBuilder) outputs(names ...string) *nodeBuilder { nb.outs = names; return nb }

func (nb *nodeBuilder) attr(a *onnxpb.AttributeProto) *nodeBuilder {
	nb.n.Attribute = append(nb.n.Attribute, a)
	return nb
}

func (nb *nodeBuilder) f(name string, v float32) *nodeBuilder {
	return nb.attr(&onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)})
}

func (nb *nodeBuilder) i(name string, v int64) *nodeBuilder {
	return nb.attr(&onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)})
}

func (nb *nodeBuilder) ints(name string, v ...int64) *nodeBuilder {
	return nb.attr(&onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v})
}

func (nb *nodeBuilder) s(name, v string) *nodeBuilder {
	return nb.attr(&onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)})
}

func (nb *nodeBuilder) t(name string, t *onnxpb.TensorProto) *nodeBuilder {
	return nb.attr(&onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t})
}

// done appends the node and returns its output names.
func (nb *nodeBuilder) done() []string {
	if nb.n.Name == nil {
		nb.n.Name = proto.String(nb.b.uniqueNodeName(nb.scope + "/" + nb.n.GetOpType()))
	}
	name := nb.n.GetName()
	for i, o := range nb.outs {
		if o == "" {
			o = name + "_output_" + strconv.Itoa(i)
		}
		nb.b.define(o)
		nb.n.Output = append(nb.n.Output, o)
	}
	nb.b.g.Node = append(nb.b.g.Node, nb.n)
	return nb.n.Output
}

// op adds a node named scope+"/"+op and returns its single output: the
// common case, e.g. b.op("Relu", "/net/net.1", x).
func (b *builder) op(op, scope string, inputs ...string) string {
	return b.node(op, scope, inputs...).done()[0]
}

// opWith is op with attributes set by fn.
func (b *builder) opWith(op, scope string, fn func(*nodeBuilder), inputs ...string) string {
	nb := b.node(op, scope, inputs...)
	fn(nb)
	return nb.done()[0]
}

// constant adds a Constant node holding a tensor of the builder's float
// type, as torch does for Python scalars (dims empty for a scalar).
func (b *builder) constant(scope string, dims []int64, vals ...float64) string {
	return b.constantT(scope, b.tensor("", b.elem, dims, vals))
}

func (b *builder) constantInt64(scope string, vals ...int64) string {
	f := make([]float64, len(vals))
	for i, v := range vals {
		f[i] = float64(v)
	}
	return b.constantT(scope, b.tensor("", tInt64, []int64{int64(len(vals))}, f))
}

func (b *builder) constantT(scope string, t *onnxpb.TensorProto) string {
	return b.node("Constant", scope).t("value", t).done()[0]
}

// ---- initializers ----

// rng returns the generator for one tensor: seeded from the case name and
// the tensor name, so a tensor's values do not depend on what else the
// case builds.
func (b *builder) rng(tensor string) *rand.Rand {
	return rand.New(rand.NewPCG(hash64(b.caseName), hash64(tensor)))
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// uniform draws n values in [lo, hi) from the tensor's generator, rounded
// to float32 so every element type can hold them (float16 rounds further).
func (b *builder) uniform(tensor string, n int64, lo, hi float64) []float64 {
	r := b.rng(tensor)
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(float32(lo + (hi-lo)*r.Float64()))
	}
	return v
}

// linearWeights returns W [out,in] (row-major) and b [out] for one
// nn.Linear: W ~ U(±sqrt(3/in)) (unit-variance-preserving, so activations
// stay O(1) through a few layers), b ~ U(±1/sqrt(in)) as torch's default.
func (b *builder) linearWeights(param string, in, out int64) (w, bias []float64) {
	wb := math.Sqrt(3 / float64(in))
	bb := 1 / math.Sqrt(float64(in))
	return b.uniform(param+".weight", out*in, -wb, wb), b.uniform(param+".bias", out, -bb, bb)
}

// init adds an initializer of the builder's float type.
func (b *builder) init(name string, dims []int64, vals []float64) string {
	return b.initT(name, b.elem, dims, vals)
}

func (b *builder) initT(name string, dt onnxpb.TensorProto_DataType, dims []int64, vals []float64) string {
	b.define(name)
	b.g.Initializer = append(b.g.Initializer, b.tensor(name, dt, dims, vals))
	return name
}

// tensor encodes vals as a TensorProto of type dt: raw_data little-endian
// as torch writes, or the typed repeated fields when b.typed is set.
func (b *builder) tensor(name string, dt onnxpb.TensorProto_DataType, dims []int64, vals []float64) *onnxpb.TensorProto {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	if n != int64(len(vals)) {
		panic(fmt.Sprintf("testmodels: %s: tensor %q has %d values for dims %v", b.caseName, name, len(vals), dims))
	}
	t := &onnxpb.TensorProto{Dims: append([]int64{}, dims...), DataType: proto.Int32(int32(dt))}
	if name != "" {
		t.Name = proto.String(name)
	}
	if b.typed {
		switch dt {
		case tFloat:
			for _, v := range vals {
				t.FloatData = append(t.FloatData, float32(v))
			}
		case tDouble:
			t.DoubleData = append([]float64{}, vals...)
		case tFloat16:
			for _, v := range vals {
				t.Int32Data = append(t.Int32Data, int32(f32ToF16(float32(v))))
			}
		case tInt64:
			for _, v := range vals {
				t.Int64Data = append(t.Int64Data, int64(v))
			}
		case tInt8, tUint8, tBool:
			for _, v := range vals {
				t.Int32Data = append(t.Int32Data, int32(v))
			}
		default:
			panic(fmt.Sprintf("testmodels: no typed encoding for %v", dt))
		}
		return t
	}
	var raw []byte
	for _, v := range vals {
		switch dt {
		case tFloat:
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(v)))
		case tDouble:
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(v))
		case tFloat16:
			raw = binary.LittleEndian.AppendUint16(raw, f32ToF16(float32(v)))
		case tInt64:
			raw = binary.LittleEndian.AppendUint64(raw, uint64(int64(v)))
		case tInt8:
			raw = append(raw, byte(int8(v)))
		case tUint8, tBool:
			raw = append(raw, byte(v))
		default:
			panic(fmt.Sprintf("testmodels: no raw encoding for %v", dt))
		}
	}
	if raw == nil {
		raw = []byte{}
	}
	t.RawData = raw
	return t
}

// ---- PyTorch module shapes ----

// linear adds nn.Linear on a 2-D input the way torch exports it:
// Gemm(x, W[out,in], b[out]) with alpha=beta=1, transB=1, node
// scope+"/Gemm", initializers param+".weight" and param+".bias".
func (b *builder) linear(scope, param, x string, in, out int64) string {
	w, bias := b.linearWeights(param, in, out)
	wn := b.init(param+".weight", []int64{out, in}, w)
	bn := b.init(param+".bias", []int64{out}, bias)
	return b.gemm(scope, x, wn, bn, 1, 1, 1)
}

// gemm adds a Gemm node with torch's attribute order (alpha, beta, then
// transB only when set). c may be "" (no C input).
func (b *builder) gemm(scope, x, w, c string, alpha, beta float32, transB int64) string {
	ins := []string{x, w}
	if c != "" {
		ins = append(ins, c)
	}
	return b.opWith("Gemm", scope, func(nb *nodeBuilder) {
		nb.f("alpha", alpha).f("beta", beta)
		if transB != 0 {
			nb.i("transB", transB)
		}
	}, ins...)
}

// matmulWeight adds the transposed weight W^T [in,out] that torch's
// constant folding leaves for MatMul, under an "onnx::MatMul_N" name. The
// values are those linearWeights gives param, so a MatMul model holds the
// same numbers as its Gemm twin.
func (b *builder) matmulWeight(param string, in, out int64) (wt string, bias []float64) {
	w, bias := b.linearWeights(param, in, out)
	name := "onnx::MatMul_" + strconv.Itoa(b.matmulID)
	b.matmulID++
	return b.init(name, []int64{in, out}, transpose(w, out, in)), bias
}

// linearMatMul adds nn.Linear on an input of rank > 2 the way torch exports
// it: MatMul(x, W^T) then Add(bias, mm) with the bias FIRST. With
// biasFirst false the Add is Add(mm, bias), as `x @ w + b` exports.
func (b *builder) linearMatMul(scope, param, x string, in, out int64, biasFirst bool) string {
	wt, bias := b.matmulWeight(param, in, out)
	mm := b.op("MatMul", scope, x, wt)
	bn := b.init(param+".bias", []int64{out}, bias)
	if biasFirst {
		return b.op("Add", scope, bn, mm)
	}
	return b.op("Add", scope, mm, bn)
}

func transpose(w []float64, rows, cols int64) []float64 {
	t := make([]float64, len(w))
	for r := range rows {
		for c := range cols {
			t[c*rows+r] = w[r*cols+c]
		}
	}
	return t
}

// ---- float16 ----

// f32ToF16 converts to IEEE half precision with round-to-nearest-even.
func f32ToF16(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	e := int((bits >> 23) & 0xff)
	mant := bits & 0x7fffff
	if e == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	exp := e - 127 + 15
	if exp >= 0x1f {
		return sign | 0x7c00
	}
	if exp <= 0 {
		if exp < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - exp)
		h := m >> shift
		rem := m & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rem > halfway || (rem == halfway && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is still the right answer
	}
	return sign | uint16(h)
}

// f16ToF32 widens an IEEE half to float32 exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
