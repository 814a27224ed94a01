package onnxio

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"slices"
	"sort"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// ExtractOptions tunes Extract.
type ExtractOptions struct {
	// Constants binds graph inputs to fixed values. The ONNX operator test
	// vectors feed weights as inputs; tests bind them this way.
	Constants map[string]*pb.TensorProto
}

// quantizedOps are ops whose presence means the model is already quantized:
// ecprune analyses float weights, so it asks to prune first.
var quantizedOps = map[string]bool{
	"QLinearMatMul": true, "MatMulInteger": true, "QLinearGemm": true, "QGemm": true,
	"QuantizeLinear": true, "DequantizeLinear": true, "DynamicQuantizeLinear": true,
	"ConvInteger": true, "QLinearConv": true, "DynamicQuantizeMatMul": true, "MatMulIntegerToFloat": true,
}

// maxDense bounds the elements of a sparse tensor ecprune densifies (2^28,
// 2 GiB in float64, far above any dense layer it prunes): a larger one is
// refused rather than allocated.
const maxDense = 1 << 28

// constVal is a constant known at extraction time.
type constVal struct {
	tensor *pb.TensorProto // nil for values computed by folding
	shape  []int
	floats []float64             // nil until needed, or for integer tensors
	sparse *pb.SparseTensorProto // densified on first use
	ints   []int64
	dtype  int32
	// origin: the initializer a folded weight came from, and the Transpose
	// node that folded it (for MatMul behind Transpose).
	init         string
	transposeIdx int
	fromNode     string // op type that produced it when not an initializer
	// A block of rows [rowOff, rowOff+shape[0]) (before any transpose) of
	// the initializer init, which has rows rows, cut by Slice node
	// sliceIdx; rows is 0 for a whole tensor.
	rowOff, rows, sliceIdx int
}

type extractor struct {
	m       *Model
	g       *Graph
	opt     ExtractOptions
	net     *Network
	vid     map[string]int
	consts  map[string]*constVal
	unavail map[string]string  // value -> cause
	sym     map[string]*symVal // integer values of shape subgraphs (shapes.go)
	vtype   map[string]int32   // element types of values and constants
	skip    map[int]bool       // nodes consumed by a pattern
	shared  map[string]bool    // initializers of dense layers that other nodes read too
	blocks  map[int]bool       // Slice nodes that cut a block of rows out of an initializer
	opset   int64
	fatal   string // a finding that makes the network unusable whatever the outputs (quantized model)
}

// Extract builds the dense network of a model: every op from the graph
// inputs to the outputs translated into the intermediate form, every
// Gemm/MatMul(+Add) with a constant weight as a Layer with its provenance.
// It never guesses: an op outside the supported set makes what depends on
// it unavailable, and the layers and outputs that depend on it say why.
// Problems with the file itself are *BadInputError values.
func Extract(m *Model, opt ExtractOptions) (*Network, error) {
	x := &extractor{
		m: m, g: NewGraph(m.Proto.Graph), opt: opt,
		net:     &Network{Evaluable: true},
		vid:     map[string]int{},
		consts:  map[string]*constVal{},
		unavail: map[string]string{},
		sym:     map[string]*symVal{},
		vtype:   map[string]int32{},
		skip:    map[int]bool{},
		shared:  map[string]bool{},
		blocks:  map[int]bool{},
		opset:   m.Opset(""),
	}
	x.net.Opset = x.opset
	if x.opset == 0 {
		x.opset = 1
	}
	for name, t := range x.g.Initializer {
		x.consts[name] = &constVal{tensor: t, shape: dimsInt(t.GetDims()), dtype: t.GetDataType(), init: name, transposeIdx: -1}
		x.vtype[name] = t.GetDataType()
	}
	for name, s := range x.g.Sparse {
		x.consts[name] = &constVal{sparse: s, shape: dimsInt(s.GetDims()), dtype: s.GetValues().GetDataType(), fromNode: "sparse_initializer", transposeIdx: -1}
	}
	for name, t := range opt.Constants {
		x.consts[name] = &constVal{tensor: t, shape: dimsInt(t.GetDims()), dtype: t.GetDataType(), fromNode: "bound input", transposeIdx: -1}
	}
	for _, in := range x.g.RealInputs {
		if _, bound := opt.Constants[in.GetName()]; bound {
			continue
		}
		id := x.value(in.GetName())
		x.vtype[in.GetName()] = ValueElemType(in)
		x.net.Inputs = append(x.net.Inputs, Input{Name: in.GetName(), Value: id, Shape: ValueShape(in), ElemType: ValueElemType(in)})
	}
	for i, n := range x.g.G.Node {
		if x.skip[i] {
			continue
		}
		if err := x.node(i, n); err != nil {
			return nil, err
		}
	}
	for _, o := range x.g.G.Output {
		name := o.GetName()
		if cause, bad := x.unavail[name]; bad {
			x.notEvaluable(fmt.Sprintf("output %q depends on %s", name, cause))
			continue
		}
		id, ok := x.vid[name]
		if !ok {
			if _, isConst := x.consts[name]; isConst {
				// A weight exported as an output: nothing to evaluate or
				// differentiate; it is left out of the network's outputs.
				x.net.ConstOutputs = append(x.net.ConstOutputs, name)
			} else {
				x.notEvaluable(fmt.Sprintf("output %q is not produced by any node", name))
			}
			continue
		}
		x.net.Outputs = append(x.net.Outputs, id)
	}
	if x.fatal != "" {
		// A quantized model: the advice matters more than which output
		// depends on it.
		x.net.Evaluable, x.net.Reason = false, x.fatal
	}
	if len(x.net.Inputs) == 0 && x.net.Evaluable {
		x.notEvaluable("the graph has no inputs to feed")
	}
	x.pruneDead()
	x.net.Types = x.valueTypes()
	x.tieLayers()
	x.finishLayers()
	x.net.AssignRoles()
	return x.net, nil
}

// Err is the reason the network cannot be analysed, as a *BadInputError
// naming the model file, or nil.
func (n *Network) Err(file string) error {
	if n.Evaluable {
		return nil
	}
	return &BadInputError{File: file, Msg: n.Reason}
}

func (x *extractor) notEvaluable(reason string) {
	if x.net.Evaluable {
		x.net.Evaluable = false
		x.net.Reason = reason
	}
}

func dimsInt(d []int64) []int {
	out := make([]int, len(d))
	for i, v := range d {
		out[i] = int(v)
	}
	return out
}

func (x *extractor) value(name string) int {
	if id, ok := x.vid[name]; ok {
		return id
	}
	id := len(x.net.Values)
	x.net.Values = append(x.net.Values, Value{Name: name})
	x.vid[name] = id
	return id
}

func nodeLabel(i int, n *pb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return fmt.Sprintf("%s_%d", n.GetOpType(), i)
}

// zeroDropoutRatio reports whether a Dropout node's ratio input is a
// constant 0: whatever its training mode, the node then passes its input
// through unchanged (the ONNX definition scales by 1/(1-ratio) a mask that
// keeps everything).
func (x *extractor) zeroDropoutRatio(n *pb.NodeProto) bool {
	if len(n.Input) < 2 || n.Input[1] == "" {
		return false // the default ratio, 0.5
	}
	c := x.consts[n.Input[1]]
	if c == nil {
		return false
	}
	v, err := x.floatsOf(c)
	return err == nil && len(v) == 1 && v[0] == 0
}

// floatsOf decodes a constant's values as float64.
func (x *extractor) floatsOf(c *constVal) ([]float64, error) {
	if c.floats != nil {
		return c.floats, nil
	}
	if c.sparse != nil {
		if err := x.densifySparse(c, c.sparse); err != nil {
			return nil, err
		}
		return c.floats, nil
	}
	if c.tensor == nil {
		if c.ints != nil {
			f := make([]float64, len(c.ints))
			for i, v := range c.ints {
				f[i] = float64(v)
			}
			return f, nil
		}
		return nil, fmt.Errorf("constant has no data")
	}
	if IsFloatType(c.dtype) {
		v, err := x.m.Floats(c.tensor)
		if err != nil {
			return nil, err
		}
		c.floats = v
		return v, nil
	}
	iv, err := x.intsOf(c)
	if err != nil {
		return nil, err
	}
	f := make([]float64, len(iv))
	for i, v := range iv {
		f[i] = float64(v)
	}
	return f, nil
}

func (x *extractor) intsOf(c *constVal) ([]int64, error) {
	if c.ints != nil {
		return c.ints, nil
	}
	if c.tensor == nil {
		return nil, fmt.Errorf("constant has no integer data")
	}
	v, err := x.m.Ints(c.tensor)
	if err != nil {
		return nil, err
	}
	c.ints = v
	return v, nil
}

func (x *extractor) densifySparse(c *constVal, s *pb.SparseTensorProto) error {
	vals, err := x.m.Floats(s.GetValues())
	if err != nil {
		return err
	}
	idx, err := x.m.Ints(s.GetIndices())
	if err != nil {
		return err
	}
	total := NumElements(s.GetDims())
	if total < 0 || total > maxDense {
		return badInput(x.m.Path, "sparse tensor %q: dims %s are invalid or too large to densify", s.GetValues().GetName(), plain.Shape(s.GetDims()))
	}
	dense := make([]float64, total)
	rank := len(s.GetDims())
	idims := s.GetIndices().GetDims()
	switch {
	case len(idims) == 1 && int64(len(idx)) == int64(len(vals)):
		for k, li := range idx {
			if li < 0 || li >= total {
				return badInput(x.m.Path, "sparse tensor %q: index %d out of range", s.GetValues().GetName(), li)
			}
			dense[li] = vals[k]
		}
	case len(idims) == 2 && int(idims[1]) == rank && len(idx) == len(vals)*rank:
		for k := range vals {
			li := int64(0)
			for d := 0; d < rank; d++ {
				li = li*s.GetDims()[d] + idx[k*rank+d]
			}
			if li < 0 || li >= total {
				return badInput(x.m.Path, "sparse tensor %q: index out of range", s.GetValues().GetName())
			}
			dense[li] = vals[k]
		}
	default:
		return badInput(x.m.Path, "sparse tensor %q: indices of shape %s do not fit %d values", s.GetValues().GetName(), plain.Shape(idims), len(vals))
	}
	c.floats = dense
	return nil
}

// constFromNode registers the value of a Constant node.
func (x *extractor) constFromNode(i int, n *pb.NodeProto) error {
	if len(n.Output) == 0 {
		return nil
	}
	out := n.Output[0]
	c := &constVal{fromNode: "Constant", transposeIdx: -1}
	a := n.Attribute
	if len(a) == 0 {
		return badInput(x.m.Path, "Constant node %s has no value", nodeLabel(i, n))
	}
	switch v := a[0]; v.GetName() {
	case "value":
		c.tensor = v.GetT()
		c.shape = dimsInt(c.tensor.GetDims())
		c.dtype = c.tensor.GetDataType()
		if c.tensor.GetDataLocation() == pb.TensorProto_EXTERNAL {
			return badInput(x.m.Path, "Constant node %s: external data in a Constant is not supported", nodeLabel(i, n))
		}
	case "sparse_value":
		s := v.GetSparseTensor()
		c.shape = dimsInt(s.GetDims())
		c.dtype = s.GetValues().GetDataType()
		c.sparse = s
	case "value_float":
		c.floats, c.shape, c.dtype = []float64{float64(v.GetF())}, []int{}, Float
	case "value_floats":
		c.floats, c.shape, c.dtype = make([]float64, len(v.Floats)), []int{len(v.Floats)}, Float
		for k, f := range v.Floats {
			c.floats[k] = float64(f)
		}
	case "value_int":
		c.ints, c.shape, c.dtype = []int64{v.GetI()}, []int{}, Int64
	case "value_ints":
		c.ints, c.shape, c.dtype = append([]int64(nil), v.Ints...), []int{len(v.Ints)}, Int64
	default:
		c.fromNode = "Constant(" + v.GetName() + ")"
		x.unavail[out] = fmt.Sprintf("Constant node %s with a %s value", nodeLabel(i, n), v.GetName())
		return nil
	}
	x.consts[out] = c
	return nil
}

// node translates graph node i.
func (x *extractor) node(i int, n *pb.NodeProto) error {
	op := n.GetOpType()
	label := nodeLabel(i, n)
	if !slices.ContainsFunc(n.Output, func(o string) bool { return o != "" }) {
		return badInput(x.m.Path, "node %s (%s) has no output", label, op)
	}
	if d := n.GetDomain(); d != "" && d != "ai.onnx" {
		x.markUnavailable(n, fmt.Sprintf("op %s of domain %s (node %s)", op, d, label))
		return nil
	}
	if n.Output[0] == "" {
		// Only later outputs are used (LSTM's Y_h without Y): no op kind
		// has such a node, so it goes to the registry.
		return x.generic(i, n)
	}
	if op == "Constant" {
		return x.constFromNode(i, n)
	}
	if quantizedOps[op] {
		out := firstOutput(n)
		if x.fatal == "" {
			x.fatal = fmt.Sprintf("quantized layer %s (%s): prune before quantizing", label, op)
		}
		x.markUnavailable(n, fmt.Sprintf("quantized op %s (node %s)", op, label))
		_ = out
		return nil
	}
	// Inputs: constants, available values, or unavailable ones.
	var vars []string
	allConst := true
	for _, in := range n.Input {
		if in == "" {
			continue
		}
		if _, ok := x.consts[in]; ok {
			continue
		}
		allConst = false
		vars = append(vars, in)
	}
	if allConst {
		return x.fold(i, n)
	}
	if op == "Gemm" || op == "MatMul" {
		return x.dense(i, n)
	}
	if op == "Slice" {
		if took, err := x.blockSlice(i, n); took || err != nil {
			return err
		}
	}
	if took, err := x.shapeNode(i, n); took || err != nil {
		return err
	}
	for _, v := range vars {
		if cause, bad := x.unavail[v]; bad {
			x.markUnavailable(n, cause)
			return nil
		}
		if _, ok := x.vid[v]; !ok {
			return badInput(x.m.Path, "node %s reads %q, which no node, initializer or graph input provides", label, v)
		}
	}
	o := Op{Node: label, Opset: x.opset}
	unsupported := func(why string) error {
		x.markUnavailable(n, fmt.Sprintf("%s (node %s): %s", op, label, why))
		return nil
	}
	in0 := func() int { return x.vid[n.Input[0]] }
	switch op {
	case "Relu", "Tanh", "Sigmoid", "HardSwish", "Softplus", "Erf", "Identity":
		o.Kind = map[string]OpKind{"Relu": OpRelu, "Tanh": OpTanh, "Sigmoid": OpSigmoid, "HardSwish": OpHardSwish,
			"Softplus": OpSoftplus, "Erf": OpErf, "Identity": OpIdentity}[op]
		o.In = []int{in0()}
	case "LeakyRelu":
		o.Kind, o.In, o.Alpha = OpLeakyRelu, []int{in0()}, AttrFloat(n, "alpha", f32(0.01))
	case "Elu":
		o.Kind, o.In, o.Alpha = OpElu, []int{in0()}, AttrFloat(n, "alpha", 1)
	case "Selu":
		o.Kind, o.In = OpSelu, []int{in0()}
		o.Alpha = AttrFloat(n, "alpha", f32(1.67326319217681884765625))
		o.Gamma = AttrFloat(n, "gamma", f32(1.05070102214813232421875))
	case "HardSigmoid":
		o.Kind, o.In = OpHardSigmoid, []int{in0()}
		o.Alpha, o.Beta = AttrFloat(n, "alpha", f32(0.2)), AttrFloat(n, "beta", f32(0.5))
	case "Gelu":
		o.Kind, o.In, o.Approx = OpGelu, []int{in0()}, AttrString(n, "approximate", "none")
		if o.Approx != "none" && o.Approx != "tanh" {
			return unsupported("approximate=" + o.Approx)
		}
	case "PRelu":
		c, err := x.constOperand(n.Input[1])
		if err != nil {
			return unsupported("slope: " + err.Error())
		}
		if c == nil {
			return x.generic(i, n) // a computed slope: the registry's PRelu
		}
		o.Kind, o.In, o.Const = OpPRelu, []int{in0()}, c
	case "Dropout":
		if len(n.Input) >= 3 && n.Input[2] != "" {
			c := x.consts[n.Input[2]]
			if c == nil {
				return unsupported("training_mode is not a constant")
			}
			v, err := x.floatsOf(c)
			if err != nil || (len(v) > 0 && v[0] != 0) {
				// Training mode with a constant ratio of 0 keeps
				// everything (torchvision's Swin attention exports
				// F.dropout(p=0) so): the identity still.
				if !x.zeroDropoutRatio(n) {
					return unsupported("training mode")
				}
			}
		}
		if AttrInt(n, "is_test", 1) == 0 && x.opset < 7 {
			return unsupported("training mode")
		}
		if len(n.Output) > 1 && n.Output[1] != "" && (len(x.g.Consumers[n.Output[1]]) > 0 || x.g.IsOutput[n.Output[1]]) {
			return unsupported("its mask output is used")
		}
		o.Kind, o.In = OpIdentity, []int{in0()}
	case "Cast":
		to := int32(AttrInt(n, "to", 0))
		if !IsFloatType(to) || !x.isFloat(n.Input[0]) {
			return x.generic(i, n) // integer semantics (shape arithmetic)
		}
		o.Kind, o.In, o.CastTo = OpCast, []int{in0()}, to
	case "BatchNormalization":
		if AttrInt(n, "training_mode", 0) != 0 {
			return unsupported("training mode")
		}
		for _, extra := range n.Output[1:] {
			if extra != "" && len(x.g.Consumers[extra]) > 0 {
				return unsupported("its running statistics outputs are used")
			}
		}
		if len(n.Input) < 5 {
			return unsupported("fewer than 5 inputs")
		}
		var ps [4][]float64
		for k := 0; k < 4; k++ {
			c := x.consts[n.Input[k+1]]
			if c == nil {
				return unsupported("parameters are not constants")
			}
			v, err := x.floatsOf(c)
			if err != nil {
				return err
			}
			ps[k] = v
		}
		if len(ps[1]) != len(ps[0]) || len(ps[2]) != len(ps[0]) || len(ps[3]) != len(ps[0]) {
			return badInput(x.m.Path, "BatchNormalization %s: parameter lengths differ", label)
		}
		o.Kind, o.In, o.Axis = OpBatchNorm, []int{in0()}, 1
		o.Scale, o.Bias, o.Mean, o.Var = ps[0], ps[1], ps[2], ps[3]
		o.Eps = AttrFloat(n, "epsilon", f32(1e-5))
	case "Add", "Sub", "Mul", "Div":
		o.Kind = map[string]OpKind{"Add": OpAdd, "Sub": OpSub, "Mul": OpMul, "Div": OpDiv}[op]
		if len(n.Input) != 2 {
			return unsupported("needs two inputs")
		}
		if x.opset < 7 && AttrInt(n, "broadcast", 0) != 0 {
			return unsupported("legacy broadcast attribute")
		}
		a, b := n.Input[0], n.Input[1]
		if !x.isFloat(a) || !x.isFloat(b) {
			return x.generic(i, n) // integer semantics (shape arithmetic)
		}
		switch {
		case x.consts[a] != nil:
			c, err := x.constOperand(a)
			if err != nil {
				return err
			}
			o.In, o.Const, o.ConstFirst = []int{x.vid[b]}, c, true
		case x.consts[b] != nil:
			c, err := x.constOperand(b)
			if err != nil {
				return err
			}
			o.In, o.Const = []int{x.vid[a]}, c
		default:
			o.In = []int{x.vid[a], x.vid[b]}
		}
	case "Softmax", "LogSoftmax":
		o.Kind = OpSoftmax
		if op == "LogSoftmax" {
			o.Kind = OpLogSoftmax
		}
		def := int64(1)
		if x.opset >= 13 {
			def = -1
		}
		o.In, o.Axis = []int{in0()}, int(AttrInt(n, "axis", def))
	case "Flatten":
		o.Kind, o.In, o.Axis = OpFlatten, []int{in0()}, int(AttrInt(n, "axis", 1))
	case "Reshape":
		if len(n.Input) < 2 {
			return unsupported("no target shape")
		}
		if x.consts[n.Input[1]] == nil {
			// x.view(x.size(0), -1): the shape is computed from x's own
			// batch size (see shapes.go).
			s, ok := x.symReshape(n)
			if !ok {
				return x.generic(i, n) // the shape is evaluated with the data
			}
			o.Kind, o.In, o.Shape = OpReshape, []int{in0()}, s
			break
		}
		s, err := x.intsOf(x.consts[n.Input[1]])
		if err != nil {
			return err
		}
		o.Kind, o.In, o.Shape, o.AllowZero = OpReshape, []int{in0()}, s, AttrInt(n, "allowzero", 0) != 0
	case "Squeeze", "Unsqueeze":
		o.Kind = OpSqueeze
		if op == "Unsqueeze" {
			o.Kind = OpUnsqueeze
		}
		axes := AttrInts(n, "axes")
		if len(n.Input) >= 2 && n.Input[1] != "" {
			c := x.consts[n.Input[1]]
			if c == nil {
				return x.generic(i, n)
			}
			v, err := x.intsOf(c)
			if err != nil {
				return err
			}
			axes = v
		}
		if axes == nil && op == "Unsqueeze" {
			return unsupported("no axes")
		}
		for _, a := range axes {
			o.Axes = append(o.Axes, int(a))
		}
		o.In = []int{in0()}
	default:
		return x.generic(i, n)
	}
	x.addOp(o, n.Output[0])
	return nil
}

// isFloat reports whether a value or constant has a float element type
// (an unknown type counts as float).
func (x *extractor) isFloat(name string) bool {
	t, ok := x.vtype[name]
	return !ok || t == 0 || IsFloatType(t)
}

func firstOutput(n *pb.NodeProto) string {
	if len(n.Output) > 0 {
		return n.Output[0]
	}
	return ""
}

func (x *extractor) addOp(o Op, out string) {
	o.Out = x.value(out)
	if _, ok := x.vtype[out]; !ok {
		switch {
		case o.Kind == OpNode:
			x.vtype[out] = o.OutType
		case o.Kind == OpCast:
			x.vtype[out] = o.CastTo
		case len(o.In) > 0:
			x.vtype[out] = x.vtype[x.net.Values[o.In[0]].Name]
		}
	}
	x.net.Ops = append(x.net.Ops, o)
}

func (x *extractor) markUnavailable(n *pb.NodeProto, cause string) {
	for _, o := range n.Output {
		if o != "" {
			x.unavail[o] = cause
		}
	}
}

func (x *extractor) constOperand(name string) (*Const, error) {
	c := x.consts[name]
	if c == nil {
		return nil, nil
	}
	v, err := x.floatsOf(c)
	if err != nil {
		return nil, err
	}
	return &Const{Name: name, Shape: append([]int{}, c.shape...), Data: v}, nil
}

// fold handles a node whose inputs are all constants. Only the folds that
// exporters leave behind for weights are done (Identity, Transpose, Cast);
// anything else is a constant subgraph ecprune does not evaluate.
func (x *extractor) fold(i int, n *pb.NodeProto) error {
	out := firstOutput(n)
	if out == "" {
		return nil
	}
	if len(n.Input) == 0 || n.Input[0] == "" {
		return x.generic(i, n)
	}
	src := x.consts[n.Input[0]]
	if c, ok := x.foldInts(n, src); ok {
		x.consts[out] = c
		x.vtype[out] = c.dtype
		return nil
	}
	switch n.GetOpType() {
	case "Identity":
		x.consts[out] = src
	case "Transpose":
		perm := AttrInts(n, "perm")
		if len(src.shape) != 2 || (perm != nil && (len(perm) != 2 || perm[0] != 1 || perm[1] != 0)) {
			return x.generic(i, n)
		}
		v, err := x.floatsOf(src)
		if err != nil {
			return err
		}
		r, c := src.shape[0], src.shape[1]
		t := make([]float64, len(v))
		for a := 0; a < r; a++ {
			for b := 0; b < c; b++ {
				t[b*r+a] = v[a*c+b]
			}
		}
		fc := &constVal{shape: []int{c, r}, floats: t, dtype: src.dtype, transposeIdx: -1, fromNode: "Transpose"}
		if src.init != "" {
			fc.init, fc.transposeIdx = src.init, i
			fc.rowOff, fc.rows, fc.sliceIdx = src.rowOff, src.rows, src.sliceIdx
		}
		x.consts[out] = fc
	case "Slice":
		if took, err := x.blockSlice(i, n); took || err != nil {
			return err
		}
		return x.generic(i, n)
	case "Cast":
		to := int32(AttrInt(n, "to", 0))
		v, err := x.floatsOf(src)
		if err != nil {
			return err
		}
		r := make([]float64, len(v))
		for k := range v {
			r[k] = RoundTo(to, v[k])
		}
		x.consts[out] = &constVal{shape: src.shape, floats: r, dtype: to, transposeIdx: -1, fromNode: "Cast"}
	default:
		return x.generic(i, n) // a constant subgraph: evaluated with the data
	}
	return nil
}

// dense translates a Gemm or MatMul (and a following bias Add) to a layer.
func (x *extractor) dense(i int, n *pb.NodeProto) error {
	op := n.GetOpType()
	label := nodeLabel(i, n)
	if len(n.Input) < 2 {
		return badInput(x.m.Path, "%s node %s has fewer than 2 inputs", op, label)
	}
	aName, bName := n.Input[0], n.Input[1]
	bc := x.consts[bName]
	if x.consts[aName] != nil || bc == nil {
		return x.generic(i, n) // a product of two activations (attention)
	}
	if !IsFloatType(bc.dtype) {
		if x.fatal == "" {
			x.fatal = fmt.Sprintf("quantized layer %s (%s weights of type %s): prune before quantizing", label, op, TypeName(bc.dtype))
		}
		x.markUnavailable(n, fmt.Sprintf("quantized layer %s", label))
		return nil
	}
	if len(bc.shape) != 2 || (op == "Gemm" && AttrInt(n, "transA", 0) != 0) {
		return x.generic(i, n) // a batched product with a constant: not a dense layer
	}
	// A weight decoded here for this layer is not kept in the constant's
	// cache: the layer's W is its only float64 copy (a large model's
	// weights would otherwise exist twice until the end of Extract).
	fresh := bc.floats == nil && bc.tensor != nil && bc.sparse == nil
	transB := op == "Gemm" && AttrInt(n, "transB", 0) != 0
	var view []float32
	if fresh && transB && AttrFloat(n, "alpha", 1) == 1 {
		// The initializer is W as stored: use its float32 bytes in place
		// when they are FLOAT raw data (nil otherwise).
		view = x.m.float32View(bc.tensor)
	}
	var wv []float64
	if view == nil {
		var err error
		if wv, err = x.floatsOf(bc); err != nil {
			return err
		}
	}
	if fresh {
		bc.floats = nil // decoded again by any other reader
	}
	l := &Layer{Node: label, TransposeIdx: -1, MainIdx: i, AddIdx: -1, Alpha: 1, Beta: 1, WeightType: bc.dtype, Prunable: true}
	l.WeightInit = bc.init
	l.SliceIdx = -1
	if bc.rows > 0 {
		l.WeightRows, l.WeightRow0, l.SliceIdx = bc.rows, bc.rowOff, bc.sliceIdx
	}
	out := n.Output[0]
	switch op {
	case "Gemm":
		if AttrInt(n, "transA", 0) != 0 {
			x.markUnavailable(n, fmt.Sprintf("Gemm (node %s) with transA=1", label))
			return nil
		}
		l.Alpha = AttrFloat(n, "alpha", 1)
		l.Beta = AttrFloat(n, "beta", 1)
		l.Pattern = "Gemm"
	case "MatMul":
		l.Pattern = "MatMul"
	}
	if transB {
		l.Out, l.In = bc.shape[0], bc.shape[1]
	} else {
		l.In, l.Out = bc.shape[0], bc.shape[1]
	}
	l.WeightLayout = LayoutInOut
	if transB {
		l.WeightLayout = LayoutOutIn
	}
	if bc.transposeIdx >= 0 {
		// The stored initializer is the transpose of what the node reads.
		l.TransposeIdx = bc.transposeIdx
		if l.WeightLayout == LayoutInOut {
			l.WeightLayout = LayoutOutIn
		} else {
			l.WeightLayout = LayoutInOut
		}
		l.Pattern = "Transpose+" + l.Pattern
	}
	if bc.rows > 0 {
		l.Pattern = "Slice+" + l.Pattern
	}
	switch {
	case view != nil && len(view) == l.Out*l.In:
		l.W32 = view // the file's bytes are W: no copy
	case view != nil:
		return fmt.Errorf("node %s: weight view of %d values for %dx%d", label, len(view), l.Out, l.In) // cannot happen
	default:
		if transB && l.Alpha == 1 && fresh && len(wv) == l.Out*l.In {
			l.W = wv // already [Out, In] and effective; nobody else holds it
		} else {
			l.W = denseWeights(wv, l.Out, l.In, transB, l.Alpha)
		}
		if bc.dtype == Float || bc.dtype == Float16 || bc.dtype == BFloat16 {
			if w32, ok := exactFloat32(l.W); ok {
				l.W, l.W32 = nil, w32
			}
		}
	}

	// Bias: Gemm's C, or an Add of a constant right after MatMul.
	if op == "Gemm" && len(n.Input) >= 3 && n.Input[2] != "" {
		cName := n.Input[2]
		cc := x.consts[cName]
		if cc == nil {
			return x.generic(i, n) // C computed: a general Gemm, not a layer
		}
		if err := x.setBias(l, cName, cc, label); err != nil {
			return err
		}
		if l.B == nil {
			return x.generic(i, n) // C is not a per-neuron bias: a general Gemm
		}
	} else if op == "MatMul" && !x.g.IsOutput[out] {
		if cons := x.g.Consumers[out]; len(cons) == 1 {
			an := x.g.G.Node[cons[0]]
			if an.GetOpType() == "Add" && len(an.Input) == 2 && (an.GetDomain() == "" || an.GetDomain() == "ai.onnx") {
				side := 1
				if an.Input[1] == out {
					side = 0
				}
				bName := an.Input[side]
				if bcst := x.consts[bName]; bcst != nil && an.Input[1-side] == out && biasShapeOK(bcst.shape, l.Out) {
					if err := x.setBias(l, bName, bcst, label); err != nil {
						return err
					}
					if l.B != nil {
						l.AddIdx, l.BiasSide = cons[0], side
						l.Pattern += "+Add"
						x.skip[cons[0]] = true
						out = an.Output[0]
					}
				}
			}
		}
	}
	if l.Pattern == "Gemm" && l.B == nil {
		l.Pattern = "Gemm (no bias)"
	}
	l.Name = l.WeightInit
	if bc.rows > 0 {
		// Several layers read blocks of the one initializer.
		l.Name = fmt.Sprintf("%s[%d:%d]", bc.init, bc.rowOff, bc.rowOff+l.BlockRows())
	}
	if l.Name == "" {
		l.Name = bName // a Constant's output: still the weight's name
		if bc.transposeIdx >= 0 || bc.fromNode == "Transpose" {
			l.Name = label
		}
	}

	// Prunable? Decide now what only the file can tell.
	switch {
	case bc.init == "":
		l.Prunable, l.Reason = false, fmt.Sprintf("weight comes from a %s, not an initializer", bc.fromNode)
	case x.g.IsOutput[bc.init]:
		l.Prunable, l.Reason = false, fmt.Sprintf("weight %s is also a graph output", bc.init)
	default:
		// Readers through Identity or Transpose count as readers of the
		// initializer itself: editing it changes all of them.
		users, exposed := x.readers(bc.init)
		switch {
		case exposed:
			l.Prunable, l.Reason = false, fmt.Sprintf("weight %s is also a graph output", bc.init)
		case len(users) > 1 || bc.rows > 0:
			// A tie: tieLayers groups the readers once all are known. A
			// block is one too, even alone: the tensor is written whole.
			x.shared[bc.init] = true
		}
	}
	if cause, bad := x.unavail[aName]; bad {
		l.Prunable, l.Reason = false, "its input comes from "+cause
		x.unavail[out] = cause
		x.addLayerOnly(l)
		return nil
	}
	if _, ok := x.vid[aName]; !ok {
		return badInput(x.m.Path, "node %s reads %q, which no node, initializer or graph input provides", label, aName)
	}
	l.Index = len(x.net.Layers)
	x.net.Layers = append(x.net.Layers, l)
	x.addOp(Op{Kind: OpDense, In: []int{x.vid[aName]}, Node: label, Layer: l, Opset: x.opset}, out)
	return nil
}

// denseWeights is the effective [Out, In] row-major weight of a stored
// weight: [Out, In] when transB, else [In, Out]; alpha applied.
func denseWeights(wv []float64, out, in int, transB bool, alpha float64) []float64 {
	w := make([]float64, out*in)
	for o := 0; o < out; o++ {
		for j := 0; j < in; j++ {
			var v float64
			if transB {
				v = wv[o*in+j]
			} else {
				v = wv[j*out+o]
			}
			w[o*in+j] = alpha * v
		}
	}
	return w
}

// readers lists the nodes that read a value, looking through Identity and
// Transpose nodes, and whether it reaches a graph output that way.
func (x *extractor) readers(name string) (nodes []int, exposed bool) {
	return x.readersSeen(name, map[string]bool{})
}

func (x *extractor) readersSeen(name string, seen map[string]bool) (nodes []int, exposed bool) {
	if seen[name] {
		return nil, false // a cycle: only in invalid graphs
	}
	seen[name] = true
	exposed = x.g.IsOutput[name]
	for _, u := range x.g.Consumers[name] {
		n := x.g.G.Node[u]
		if op := n.GetOpType(); (op == "Identity" || op == "Transpose") && len(n.Output) > 0 {
			sub, exp := x.readersSeen(n.Output[0], seen)
			if op == "Transpose" && len(sub) == 1 && !exp {
				nodes = append(nodes, sub...) // the weight's own Transpose
				continue
			}
			nodes = append(nodes, sub...)
			exposed = exposed || exp
			if len(sub) == 0 && !exp {
				nodes = append(nodes, u)
			}
			continue
		}
		nodes = append(nodes, u)
	}
	return nodes, exposed
}

// addLayerOnly lists a layer that cannot be evaluated (for inspect).
func (x *extractor) addLayerOnly(l *Layer) {
	l.Index = len(x.net.Layers)
	x.net.Layers = append(x.net.Layers, l)
}

// biasShapeOK: a constant added after MatMul is a per-neuron bias when it
// varies only along the last axis: [out], [1,out], [1,1,out], ...
func biasShapeOK(shape []int, out int) bool {
	if len(shape) == 0 || shape[len(shape)-1] != out {
		return false
	}
	for _, d := range shape[:len(shape)-1] {
		if d != 1 {
			return false
		}
	}
	return true
}

// setBias records a constant bias; l.B stays nil if its shape cannot be a
// per-neuron bias.
func (x *extractor) setBias(l *Layer, name string, c *constVal, label string) error {
	v, err := x.floatsOf(c)
	if err != nil {
		return err
	}
	size := 1
	for _, d := range c.shape {
		size *= d
	}
	switch {
	case size == 1 && (len(c.shape) == 0 || biasShapeOK(c.shape, 1)):
		l.B = make([]float64, l.Out)
		for o := range l.B {
			l.B[o] = l.Beta * v[0]
		}
	case biasShapeOK(c.shape, l.Out):
		l.B = make([]float64, l.Out)
		for o := range l.B {
			l.B[o] = l.Beta * v[o]
		}
	default:
		return nil
	}
	l.BiasInit = c.init
	l.BiasShape = make([]int64, len(c.shape))
	for k, d := range c.shape {
		l.BiasShape[k] = int64(d)
	}
	l.BiasType = c.dtype
	switch {
	case c.rows > 0:
		// A block of a bias initializer the layer's Slice alone reads.
		l.BiasRows, l.BiasOff = c.rows, c.rowOff
		l.BiasShared = len(x.g.Consumers[name]) > 1 || x.g.IsOutput[name] || x.g.IsOutput[c.init]
	case c.init == "" || len(x.g.Consumers[c.init]) > 1 || x.g.IsOutput[c.init]:
		l.BiasShared = true
	}
	if !IsFloatType(c.dtype) {
		l.B = nil
	}
	return nil
}

// finishLayers fills in what follows each layer and applies network-wide
// reasons.
func (x *extractor) finishLayers() {
	consumersOf := map[int][]string{}
	for _, o := range x.net.Ops {
		for _, in := range o.In {
			consumersOf[in] = append(consumersOf[in], o.Kind.String())
		}
	}
	outputs := map[int]bool{}
	for _, o := range x.net.Outputs {
		outputs[o] = true
	}
	for _, o := range x.net.Ops {
		if o.Layer == nil {
			continue
		}
		next := consumersOf[o.Out]
		if outputs[o.Out] {
			next = append(next, "output")
		}
		sort.Strings(next)
		o.Layer.Next = next
	}
	if !x.net.Evaluable {
		for _, l := range x.net.Layers {
			if l.Prunable {
				l.Prunable, l.Reason = false, "the network cannot be evaluated: "+x.net.Reason
			}
		}
	}
}

// blockSlice takes a Slice that cuts rows [a, b) (axis 0, step 1, bounds
// the graph fixes, see staticInts) out of a float initializer of rank 1 or
// 2, as MultiheadAttention's packed in_proj_weight and in_proj_bias are
// split when query and key differ. The block becomes a constant that
// remembers where it lies, so that a dense layer reading it is a layer on
// part of the stored tensor. The node stays in the file; the evaluator
// reads the block directly, which is what the Slice computes in any run
// the graph admits.
func (x *extractor) blockSlice(i int, n *pb.NodeProto) (bool, error) {
	if x.opset < 10 || len(n.Input) < 3 || len(n.Output) != 1 {
		return false, nil
	}
	c := x.consts[n.Input[0]]
	if c == nil || c.init == "" || c.tensor == nil || c.rows > 0 || c.transposeIdx >= 0 || !IsFloatType(c.dtype) ||
		(len(c.shape) != 1 && len(c.shape) != 2) || x.g.Initializer[c.init] == nil {
		return false, nil
	}
	start, end, axis, step, ok := x.sliceArgs(n)
	rows := int64(c.shape[0])
	if !ok || step != 1 || (axis != 0 && axis != -int64(len(c.shape))) {
		return false, nil
	}
	clamp := func(v int64) int64 {
		if v < 0 {
			v += rows
		}
		return max(0, min(v, rows))
	}
	a, b := int(clamp(start)), int(clamp(end))
	if a >= b {
		return false, nil
	}
	v, err := x.floatsOf(c)
	if err != nil {
		return false, err
	}
	cols := 1
	shape := []int{b - a}
	if len(c.shape) == 2 {
		cols = c.shape[1]
		shape = append(shape, cols)
	}
	if len(v) != int(rows)*cols {
		return false, nil // data that does not match the dims: evaluated as it is
	}
	x.consts[n.Output[0]] = &constVal{shape: shape, floats: v[a*cols : b*cols], dtype: c.dtype, init: c.init,
		transposeIdx: -1, fromNode: "Slice", rowOff: a, rows: int(rows), sliceIdx: i}
	x.vtype[n.Output[0]] = c.dtype
	x.blocks[i] = true
	return true, nil
}

// foldInts computes the integer arithmetic over constants that exporters
// leave unfolded (torch without constant folding splits a packed weight
// at Shape(w)[0] / 3 * k): Shape of a constant, and Gather, Add, Sub, Mul,
// Div, Unsqueeze, Squeeze and Concat of small integer constants. It
// reports false for anything else, which is evaluated with the data.
func (x *extractor) foldInts(n *pb.NodeProto, src *constVal) (*constVal, bool) {
	const maxLen = 64 // shape vectors, never tensors
	ints := func(name string) (*constVal, []int64, bool) {
		c := x.consts[name]
		if c == nil || IsFloatType(c.dtype) || (c.dtype != Int64 && c.dtype != Int32) {
			return nil, nil, false
		}
		v, err := x.intsOf(c)
		if err != nil || len(v) > maxLen {
			return nil, nil, false
		}
		return c, v, true
	}
	mk := func(shape []int, v []int64, dt int32) (*constVal, bool) {
		return &constVal{shape: shape, ints: v, dtype: dt, transposeIdx: -1, fromNode: n.GetOpType()}, true
	}
	switch op := n.GetOpType(); op {
	case "Shape":
		if len(n.Attribute) > 0 || len(src.shape) > maxLen {
			return nil, false // start/end: left to the evaluator
		}
		v := make([]int64, len(src.shape))
		for k, d := range src.shape {
			v[k] = int64(d)
		}
		return mk([]int{len(v)}, v, Int64)
	case "Gather":
		c, data, ok := ints(n.Input[0])
		if !ok || len(n.Input) != 2 || len(c.shape) != 1 || AttrInt(n, "axis", 0) != 0 {
			return nil, false
		}
		ic, idx, ok := ints(n.Input[1])
		if !ok || len(ic.shape) > 1 {
			return nil, false
		}
		v := make([]int64, len(idx))
		for k, i := range idx {
			if i < 0 {
				i += int64(len(data))
			}
			if i < 0 || i >= int64(len(data)) {
				return nil, false
			}
			v[k] = data[i]
		}
		return mk(slices.Clone(ic.shape), v, c.dtype)
	case "Add", "Sub", "Mul", "Div":
		if len(n.Input) != 2 {
			return nil, false
		}
		ca, a, oka := ints(n.Input[0])
		cb, b, okb := ints(n.Input[1])
		if !oka || !okb || ca.dtype != cb.dtype || len(ca.shape) > 1 || len(cb.shape) > 1 {
			return nil, false
		}
		size, shape := len(a), ca.shape
		switch {
		case len(a) == len(b):
			if len(cb.shape) > len(ca.shape) {
				shape = cb.shape
			}
		case len(a) == 1 && len(ca.shape) <= len(cb.shape):
			size, shape = len(b), cb.shape
		case len(b) != 1 || len(cb.shape) > len(ca.shape):
			return nil, false
		}
		v := make([]int64, size)
		for k := range v {
			p, q := a[min(k, len(a)-1)], b[min(k, len(b)-1)]
			switch op {
			case "Add":
				v[k] = p + q
			case "Sub":
				v[k] = p - q
			case "Mul":
				v[k] = p * q
			case "Div":
				if q == 0 {
					return nil, false
				}
				v[k] = p / q // ONNX integer division truncates, as Go's
			}
		}
		return mk(slices.Clone(shape), v, ca.dtype)
	case "Unsqueeze", "Squeeze":
		c, v, ok := ints(n.Input[0])
		if !ok {
			return nil, false
		}
		axes := AttrInts(n, "axes")
		if len(n.Input) > 1 && n.Input[1] != "" {
			if _, a, ok := ints(n.Input[1]); ok {
				axes = a
			} else {
				return nil, false
			}
		}
		switch {
		case op == "Unsqueeze" && len(c.shape) == 0 && len(axes) == 1 && (axes[0] == 0 || axes[0] == -1):
			return mk([]int{1}, slices.Clone(v), c.dtype)
		case op == "Squeeze" && len(c.shape) == 1 && c.shape[0] == 1 && (axes == nil || (len(axes) == 1 && (axes[0] == 0 || axes[0] == -1))):
			return mk([]int{}, slices.Clone(v), c.dtype)
		}
	case "Concat":
		if AttrInt(n, "axis", 0) != 0 {
			return nil, false
		}
		var v []int64
		dt := int32(0)
		for _, in := range n.Input {
			c, iv, ok := ints(in)
			if !ok || len(c.shape) != 1 || (dt != 0 && c.dtype != dt) {
				return nil, false
			}
			dt = c.dtype
			v = append(v, iv...)
		}
		return mk([]int{len(v)}, v, dt)
	}
	return nil, false
}
