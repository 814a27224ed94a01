package onnxio

import (
	"fmt"
	"math"
)

// OpKind is an operation of the extracted dense network. Every kind has an
// exact ONNX meaning; the evaluator and the differentiator in package
// analysis implement each one.
type OpKind int

// The operations ecprune evaluates and differentiates. Elementwise ops act
// on any shape; Dense contracts the last axis.
const (
	OpDense       OpKind = iota // z = x W^T + b over the last axis (Layer)
	OpIdentity                  // Identity, Dropout (inference)
	OpCast                      // Cast between float types: rounds to CastTo
	OpRelu                      //
	OpLeakyRelu                 // Alpha
	OpPRelu                     // Const: slope, broadcast against x
	OpTanh                      //
	OpSigmoid                   //
	OpHardSigmoid               // max(0, min(1, Alpha*x + Beta))
	OpHardSwish                 // x * max(0, min(1, x/6 + 1/2))
	OpElu                       // Alpha
	OpSelu                      // Alpha, Gamma
	OpSoftplus                  // log(1 + exp(x))
	OpGelu                      // Approx "none" (erf) or "tanh"
	OpErf                       //
	OpBatchNorm                 // inference: (x-Mean)/sqrt(Var+Eps)*Scale+Bias over axis 1
	OpAdd                       // binary, numpy broadcasting; one operand may be Const
	OpSub                       //
	OpMul                       //
	OpDiv                       //
	OpSoftmax                   // Axis, Opset (before 13: coerced to 2-D at Axis)
	OpLogSoftmax                // Axis, Opset
	OpFlatten                   // Axis
	OpReshape                   // Shape (0 copies, -1 infers), AllowZero
	OpSqueeze                   // Axes (nil: all 1-dims)
	OpUnsqueeze                 // Axes
	// OpNode is any other ONNX node, evaluated and differentiated by the
	// op registry of package analysis (one entry per ONNX op type): Type
	// names it, Attrs holds its attributes, In its present inputs (Slots
	// maps ONNX input positions to them) and OutIndex says which of the
	// node's outputs the op produces.
	OpNode
)

var opNames = [...]string{"Dense", "Identity", "Cast", "Relu", "LeakyRelu", "PRelu", "Tanh", "Sigmoid",
	"HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Gelu", "Erf", "BatchNormalization",
	"Add", "Sub", "Mul", "Div", "Softmax", "LogSoftmax", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Node"}

func (k OpKind) String() string {
	if int(k) >= 0 && int(k) < len(opNames) {
		return opNames[k]
	}
	return "Op?"
}

// Const is a constant operand (an initializer or Constant node's value).
type Const struct {
	Name  string
	Shape []int
	Data  []float64
}

// Op is one operation of the network. In lists value ids; for binary ops
// with a constant operand In has one entry and Const is the other operand
// (ConstFirst: the constant is the left operand, as in Sub(c, x)).
type Op struct {
	Kind       OpKind
	In         []int
	Out        int
	Node       string // ONNX node name (or op type and index) for messages
	Layer      *Layer // OpDense
	Const      *Const // binary ops with a constant, PRelu slope
	ConstFirst bool
	Alpha      float64 // LeakyRelu, HardSigmoid, Elu, Selu
	Beta       float64 // HardSigmoid
	Gamma      float64 // Selu
	Approx     string  // Gelu
	Axis       int     // Softmax, LogSoftmax, Flatten; BatchNorm: 1
	Axes       []int   // Squeeze, Unsqueeze
	Shape      []int64 // Reshape target
	AllowZero  bool    // Reshape
	Opset      int64   // default-domain opset of the model (Softmax semantics)
	CastTo     int32   // Cast target element type
	// BatchNorm parameters, per channel.
	Scale, Bias, Mean, Var []float64
	Eps                    float64

	// OpNode: the ONNX op type, its attributes, the ONNX input positions
	// (Slots[k] is the index into In of input k, -1 for an absent optional
	// input), the node output this op produces, and the element types of
	// the inputs (by slot, 0 when absent) and of the output.
	Type     string
	Attrs    map[string]AttrValue
	Slots    []int
	OutIndex int
	Outputs  int // how many outputs the node has (Split without sizes)
	InTypes  []int32
	OutType  int32
}

// String names the op for messages: its ONNX type for OpNode.
func (o *Op) String() string {
	if o.Kind == OpNode {
		return o.Type
	}
	return o.Kind.String()
}

// AttrValue is an attribute of an ONNX node, decoded: Kind says which field
// holds the value.
type AttrValue struct {
	Kind    AttrKind
	Int     int64
	Float   float64
	Str     string
	Ints    []int64
	Floats  []float64
	Strs    []string
	Tensor  *Const // a tensor attribute (ConstantOfShape's value), float64 values
	TensorT int32  // its element type
}

// AttrKind is the type of an attribute's value.
type AttrKind int

// Attribute value kinds; AttrIsOther covers graphs and the rest, which no
// registered op reads.
const (
	AttrIsOther AttrKind = iota
	AttrIsInt
	AttrIsFloat
	AttrIsString
	AttrIsInts
	AttrIsFloats
	AttrIsStrings
	AttrIsTensor
)

// AttrInt is an OpNode's integer attribute, or def when absent.
func (o *Op) AttrInt(name string, def int64) int64 {
	if a, ok := o.Attrs[name]; ok && a.Kind == AttrIsInt {
		return a.Int
	}
	return def
}

// AttrFloat is an OpNode's float attribute, or def when absent.
func (o *Op) AttrFloat(name string, def float64) float64 {
	if a, ok := o.Attrs[name]; ok && a.Kind == AttrIsFloat {
		return a.Float
	}
	return def
}

// AttrString is an OpNode's string attribute, or def when absent.
func (o *Op) AttrString(name, def string) string {
	if a, ok := o.Attrs[name]; ok && a.Kind == AttrIsString {
		return a.Str
	}
	return def
}

// AttrInts is an OpNode's integer-list attribute, or nil when absent.
func (o *Op) AttrInts(name string) []int64 {
	if a, ok := o.Attrs[name]; ok && a.Kind == AttrIsInts {
		return a.Ints
	}
	return nil
}

// AttrFloats is an OpNode's float-list attribute, or nil when absent.
func (o *Op) AttrFloats(name string) []float64 {
	if a, ok := o.Attrs[name]; ok && a.Kind == AttrIsFloats {
		return a.Floats
	}
	return nil
}

// HasAttr reports whether an OpNode carries the attribute.
func (o *Op) HasAttr(name string) bool {
	_, ok := o.Attrs[name]
	return ok
}

// ConstValue is a constant the evaluator places in a value before running
// the ops: the constant inputs of OpNode ops (shapes, indices, weights of
// ops that are not dense layers).
type ConstValue struct {
	Value int
	Const *Const
	Type  int32 // element type
}

// Value is a named tensor flowing between ops.
type Value struct {
	Name string
}

// Input is a graph input the network is fed with.
type Input struct {
	Name     string
	Value    int     // value id
	Shape    []int64 // declared shape including the batch dim; -1 where dynamic
	ElemType int32
}

// Layout is how a dense layer's weight is stored in the file.
type Layout int

const (
	// LayoutOutIn: stored [out, in] (Gemm transB=1, or MatMul behind a
	// Transpose of the initializer).
	LayoutOutIn Layout = iota
	// LayoutInOut: stored [in, out] (MatMul, Gemm transB=0).
	LayoutInOut
)

func (l Layout) String() string {
	if l == LayoutInOut {
		return "[in,out]"
	}
	return "[out,in]"
}

// Layer is a dense layer z = W a + b with its provenance in the file, so
// that export can write a pruned W and a shifted b back where they came
// from, in their original layout and element type.
type Layer struct {
	Index   int    // position among the network's layers (graph order)
	Name    string // the weight initializer's name (scores and flags use it)
	Node    string // the main node's name (Gemm or MatMul)
	Pattern string // "Gemm", "MatMul+Add", "Transpose+MatMul+Add", "MatMul", ...
	Out, In int
	// The weights, Out x In row-major, effective (alpha applied), are held
	// in exactly one of W and W32. Weights stored as FLOAT, FLOAT16 or
	// BFLOAT16 whose effective values are float32 numbers stay float32
	// (W32, often a view of the model file's bytes, see Extract): a 42M-
	// weight model then needs 168 MB for them, not 336 MB more in float64,
	// which is what lets an analysis fit in 6x the file size. W holds the
	// others (DOUBLE weights, an alpha that leaves float32). W32 is read
	// only, since it may share the model's memory: change weights with
	// SetWeights. Read them with At or Weights64 (or W32 itself).
	W   []float64
	W32 []float32
	B   []float64 // Out, effective (beta applied); nil: no bias

	// Provenance.
	WeightInit   string // initializer holding the weight
	WeightLayout Layout
	WeightType   int32 // element type
	Alpha        float64
	TransposeIdx int // node index of the Transpose in front of MatMul, or -1
	// A weight that is a block of rows of WeightInit (a Slice along its
	// axis 0, as a packed attention projection is split): the stored
	// tensor has WeightRows rows and the block starts at WeightRow0, cut
	// by node SliceIdx (-1 for a whole tensor, WeightRows 0).
	WeightRows, WeightRow0, SliceIdx int
	MainIdx                          int // node index of the Gemm or MatMul
	AddIdx                           int // node index of the bias Add, or -1
	BiasInit                         string
	BiasShape                        []int64 // stored shape ([out], [1,out], [] for a scalar, ...)
	BiasType                         int32
	Beta                             float64
	BiasSide                         int // bias Add: which input (0 or 1) is the bias
	BiasShared                       bool
	// A bias that is the block [BiasOff, BiasOff+Out) of BiasInit, which
	// holds BiasRows values (0 for a whole tensor).
	BiasRows, BiasOff int

	// Tie is the group of readers of a weight other nodes read too
	// (nil for a weight of its own): its layers are pruned as one tensor.
	Tie *Tie

	Prunable bool
	Reason   string   // why not prunable
	Next     []string // op types that consume the layer's output
	Role     Role     // what the layer does in the model (roles.go)
}

// Params is the number of weights (biases excluded, as for sparsity).
func (l *Layer) Params() int { return l.Out * l.In }

// At is the weight at row-major position q (row q/In, column q%In).
func (l *Layer) At(q int) float64 {
	if l.W32 != nil {
		return float64(l.W32[q])
	}
	return l.W[q]
}

// Weights64 returns the weights in float64: W itself when the layer holds
// float64 weights (not to be modified: use SetWeights), else a new copy.
func (l *Layer) Weights64() []float64 {
	if l.W32 == nil {
		return l.W
	}
	w := make([]float64, len(l.W32))
	for q, v := range l.W32 {
		w[q] = float64(v)
	}
	return w
}

// NonZeros counts the non-zero weights.
func (l *Layer) NonZeros() int {
	nz := 0
	if l.W32 != nil {
		for _, v := range l.W32 {
			if v != 0 {
				nz++
			}
		}
		return nz
	}
	for _, v := range l.W {
		if v != 0 {
			nz++
		}
	}
	return nz
}

// SetWeights replaces the weights with a copy of w (Out x In): in float32
// when the layer held float32 weights and every value of w is a float32
// number (as pruned or compensated copies of them are), else in float64.
// The layer's previous storage, which may be the model's, is not written.
func (l *Layer) SetWeights(w []float64) {
	if len(w) != l.Out*l.In {
		panic(fmt.Sprintf("onnxio: SetWeights of layer %s: %d weights for %dx%d", l.Name, len(w), l.Out, l.In))
	}
	if l.W32 != nil {
		if w32, ok := exactFloat32(w); ok {
			l.W, l.W32 = nil, w32
			return
		}
	}
	l.W, l.W32 = append([]float64(nil), w...), nil
}

// Own64 makes the layer hold its own float64 weights (converting W32),
// for code that changes weights in place (ec+'s working copy).
func (l *Layer) Own64() {
	if l.W32 != nil {
		l.W, l.W32 = l.Weights64(), nil
	}
}

// exactFloat32 converts w to float32 when every value survives the round
// trip bit for bit.
func exactFloat32(w []float64) ([]float32, bool) {
	w32 := make([]float32, len(w))
	for q, v := range w {
		f := float32(v)
		if math.Float64bits(float64(f)) != math.Float64bits(v) {
			return nil, false
		}
		w32[q] = f
	}
	return w32, true
}

// Network is the evaluable dense part of a model: ops in topological order
// from the graph inputs to the graph outputs.
type Network struct {
	Values  []Value
	Inputs  []Input
	Outputs []int // value ids of the graph outputs, graph order
	// ConstOutputs are graph outputs that are constants (a weight exported
	// as an output): they are not part of the evaluated outputs.
	ConstOutputs []string
	Ops          []Op
	Layers       []*Layer // the dense layers, graph order (also referenced by ops)
	// Ties are the weights several nodes read, with their readers (their
	// dense uses are also in Layers).
	Ties  []*Tie
	Opset int64
	// Consts are the constant values OpNode ops read.
	Consts []ConstValue
	// Types are the element types of the values by id (0: unknown, a
	// float type is assumed): integer values (shapes, indices) are carried
	// in float64 tensors too, and ops on them use integer semantics.
	Types []int32

	// Evaluable is false when some graph output depends on an op outside
	// the supported set; Reason then names it. Layers are still listed
	// (none prunable) so that inspect can show them.
	Evaluable bool
	Reason    string
}

// Prunable lists the prunable layers.
func (n *Network) Prunable() []*Layer {
	var out []*Layer
	for _, l := range n.Layers {
		if l.Prunable {
			out = append(out, l)
		}
	}
	return out
}

// LayerByName finds a layer by weight initializer or node name.
func (n *Network) LayerByName(name string) *Layer {
	for _, l := range n.Layers {
		if l.Name == name || l.Node == name {
			return l
		}
	}
	return nil
}

// Clone copies the network with its own layer weights and biases, so a
// pruned copy can be evaluated beside the original.
func (n *Network) Clone() *Network {
	c := *n
	c.Ops = append([]Op(nil), n.Ops...)
	c.Layers = make([]*Layer, len(n.Layers))
	remap := map[*Layer]*Layer{}
	for i, l := range n.Layers {
		cl := *l
		if l.W32 != nil {
			cl.W32 = append([]float32(nil), l.W32...)
		} else {
			cl.W = append([]float64(nil), l.W...)
		}
		if l.B != nil {
			cl.B = append([]float64(nil), l.B...)
		}
		c.Layers[i] = &cl
		remap[l] = &cl
	}
	for i := range c.Ops {
		if c.Ops[i].Layer != nil {
			c.Ops[i].Layer = remap[c.Ops[i].Layer]
		}
	}
	if n.Ties != nil {
		c.Ties = make([]*Tie, len(n.Ties))
		for k, t := range n.Ties {
			ct := *t
			ct.Layers = make([]*Layer, len(t.Layers))
			for u, l := range t.Layers {
				ct.Layers[u] = remap[l]
				remap[l].Tie = &ct
			}
			c.Ties[k] = &ct
		}
	}
	return &c
}
