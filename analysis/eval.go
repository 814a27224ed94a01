package analysis

import (
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Trace is the result of a forward pass: the tensor of every value of the
// network, by value id. Layer inputs and outputs (a_j and z_i of the
// method) are read from it, and the differentiator linearises around it.
// Values may share data with each other (reshape-like ops do not copy) and
// with the inputs given to Run: treat them as read-only.
type Trace struct {
	Values  []*Tensor // by value id
	outputs []int     // net.Outputs at the time of the run
	// w32, when set, gives the layers' weights in float32 (their own W32,
	// or a copy of W) and the Dense products run in float32 (the forward
	// pass of probe estimates).
	w32 func(*onnxio.Layer) []float32
	// reluInPlace, when set, marks the values a Relu may overwrite with its
	// output (see reluInPlaceValues): Collect's traces then hold one tensor
	// where a Dense+Relu pair would hold two.
	reluInPlace []bool
	// arena, when set, provides the op outputs and the reverse pass's
	// buffers, and gets them back when the owner of the trace (Collect)
	// is done with the batch: the trace must not be used after that.
	arena *arena
}

// reluInPlaceValues marks the Dense outputs whose only reader is a Relu
// and that are not graph outputs: the Relu may then write its output over
// them. Only a trace whose pre-activations nobody reads may use it: the
// derivatives do not need them, since Relu's derivative (1 where x > 0,
// else 0) is the same function of y = max(x, 0) as of x, but Observe (ec+)
// and the brute-force importance read z.
func reluInPlaceValues(net *onnxio.Network) []bool {
	uses := make([]int, len(net.Values))
	for _, op := range net.Ops {
		for _, id := range op.In {
			if id >= 0 && id < len(uses) {
				uses[id]++
			}
		}
	}
	for _, id := range net.Outputs {
		if id >= 0 && id < len(uses) {
			uses[id] += 2
		}
	}
	dense := make([]bool, len(net.Values))
	for _, op := range net.Ops {
		// A Conv's output is not read by its derivatives either.
		if (op.Kind == onnxio.OpDense || op.Kind == onnxio.OpNode && op.Type == "Conv") && op.Out >= 0 && op.Out < len(dense) {
			dense[op.Out] = true
		}
	}
	ok := make([]bool, len(net.Values))
	for _, op := range net.Ops {
		if op.Kind == onnxio.OpRelu && len(op.In) == 1 {
			if id := op.In[0]; id >= 0 && id < len(ok) && dense[id] && uses[id] == 1 {
				ok[id] = true
			}
		}
	}
	return ok
}

// Outputs returns the graph output tensors in the network's output order.
func (tr *Trace) Outputs() []*Tensor {
	out := make([]*Tensor, len(tr.outputs))
	for i, id := range tr.outputs {
		out[i] = tr.Values[id]
	}
	return out
}

// Run evaluates the network on a batch: inputs are in net.Inputs order,
// each with the batch as its first dimension. The batch dimension may
// differ from the declared one (calibration batches a model exported with
// batch 1); every other declared dimension must match.
func Run(net *onnxio.Network, inputs []*Tensor) (*Trace, error) {
	return run(net, inputs, nil)
}

// run is Run, with the Dense products in float32 when w32 is set (see
// Trace.w32).
func run(net *onnxio.Network, inputs []*Tensor, w32 func(*onnxio.Layer) []float32) (*Trace, error) {
	return runTrace(net, inputs, w32, nil, nil)
}

// runTrace is run with the Relus marked by reluInPlace (nil: none)
// computed in place, and the op outputs from ar when it is not nil (see
// Trace.arena).
func runTrace(net *onnxio.Network, inputs []*Tensor, w32 func(*onnxio.Layer) []float32, reluInPlace []bool, ar *arena) (*Trace, error) {
	if !net.Evaluable {
		if net.Reason != "" {
			return nil, fmt.Errorf("network is not evaluable: %s", net.Reason)
		}
		return nil, errors.New("network is not evaluable")
	}
	if len(inputs) != len(net.Inputs) {
		return nil, fmt.Errorf("network has %d inputs, got %d tensors", len(net.Inputs), len(inputs))
	}
	vals := make([]*Tensor, len(net.Values))
	for i, in := range net.Inputs {
		t := inputs[i]
		if in.Value < 0 || in.Value >= len(vals) {
			return nil, fmt.Errorf("input %q: value id %d out of range", in.Name, in.Value)
		}
		if t == nil {
			return nil, fmt.Errorf("input %q: no tensor", in.Name)
		}
		if len(t.Data) != ShapeSize(t.Shape) {
			return nil, fmt.Errorf("input %q: %d values for shape %s", in.Name, len(t.Data), plain.Shape(t.Shape))
		}
		if err := checkDeclared(in.Shape, t.Shape); err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		vals[in.Value] = t
	}
	for _, c := range net.Consts {
		if c.Value < 0 || c.Value >= len(vals) || c.Const == nil {
			return nil, fmt.Errorf("constant value id %d out of range", c.Value)
		}
		vals[c.Value] = &Tensor{Shape: c.Const.Shape, Data: c.Const.Data}
	}
	tr := &Trace{Values: vals, outputs: append([]int(nil), net.Outputs...), w32: w32, reluInPlace: reluInPlace, arena: ar}
	if err := evalOps(net, tr, 0); err != nil {
		return nil, err
	}
	return tr, nil
}

// checkDeclared compares a fed shape with a declared one (nil: unknown
// rank; -1 or 0 in a declaration: dynamic). Dimension 0 is the batch and
// is free.
func checkDeclared(decl []int64, got []int) error {
	if len(decl) == 0 {
		return nil
	}
	if len(decl) != len(got) {
		return fmt.Errorf("shape %s, declared %s", plain.Shape(got), plain.Declared(decl))
	}
	for i := 1; i < len(decl); i++ {
		if decl[i] > 0 && int(decl[i]) != got[i] {
			return fmt.Errorf("shape %s, declared %s", plain.Shape(got), plain.Declared(decl))
		}
	}
	return nil
}

// RunFrom re-evaluates ops[start:] of net, reusing tr's values for
// everything computed before; tr is not modified. net must have the same
// ops as the network tr came from and may differ in layer weights (a Clone
// with one layer changed): re-running from that layer's op (LayerOp) gives
// the changed outputs without recomputing the unchanged prefix.
func RunFrom(net *onnxio.Network, tr *Trace, start int) (*Trace, error) {
	if start < 0 || start > len(net.Ops) {
		return nil, fmt.Errorf("RunFrom: start %d out of range [0, %d]", start, len(net.Ops))
	}
	if len(tr.Values) != len(net.Values) {
		return nil, fmt.Errorf("RunFrom: trace has %d values, network %d", len(tr.Values), len(net.Values))
	}
	nt := &Trace{Values: append([]*Tensor(nil), tr.Values...), outputs: append([]int(nil), net.Outputs...)}
	if err := evalOps(net, nt, start); err != nil {
		return nil, err
	}
	return nt, nil
}

// RunFromInPlace is RunFrom writing into tr itself: the outputs of
// ops[start:] replace tr's values, nothing else of tr changes. It costs
// the ops it runs, not a copy of every value of the network, which is
// what a caller that re-evaluates one layer at a time along a deep
// network needs to stay linear in its depth. The replaced tensors are
// only dropped from tr, never modified.
func RunFromInPlace(net *onnxio.Network, tr *Trace, start int) error {
	if start < 0 || start > len(net.Ops) {
		return fmt.Errorf("RunFrom: start %d out of range [0, %d]", start, len(net.Ops))
	}
	if len(tr.Values) != len(net.Values) {
		return fmt.Errorf("RunFrom: trace has %d values, network %d", len(tr.Values), len(net.Values))
	}
	nt := &Trace{Values: tr.Values, outputs: append([]int(nil), net.Outputs...)}
	if err := evalOps(net, nt, start); err != nil {
		return err
	}
	tr.outputs = nt.outputs
	return nil
}

// LayerOp is the index in net.Ops of the Dense op of layer l, or -1.
func LayerOp(net *onnxio.Network, l *onnxio.Layer) int {
	for i := range net.Ops {
		if net.Ops[i].Layer == l {
			return i
		}
	}
	return -1
}

func evalOps(net *onnxio.Network, tr *Trace, start int) error {
	alloc, raw := tr.arena.alloc(), tr.arena.rawAlloc()
	for i := start; i < len(net.Ops); i++ {
		op := &net.Ops[i]
		if op.Out < 0 || op.Out >= len(tr.Values) {
			return opErr(i, op, fmt.Errorf("output value id %d out of range", op.Out))
		}
		var out *Tensor
		var err error
		if op.Kind == onnxio.OpRelu && len(op.In) == 1 && op.In[0] >= 0 && op.In[0] < len(tr.reluInPlace) && tr.reluInPlace[op.In[0]] && tr.Values[op.In[0]] != nil {
			x := tr.Values[op.In[0]]
			unaryForward(op, x.Data, x.Data)
			tr.Values[op.Out] = x
			continue
		}
		if tr.w32 != nil && op.Kind == onnxio.OpDense && op.Layer != nil {
			var x *Tensor
			if x, err = opInput(op, tr.Values, 0); err == nil {
				out, err = denseForwardW(op, x, tr.w32(op.Layer), alloc)
			}
		} else {
			out, err = forwardOpAlloc(net, op, tr.Values, alloc, raw)
		}
		if err != nil {
			return opErr(i, op, err)
		}
		tr.Values[op.Out] = out
	}
	for _, id := range net.Outputs {
		if id < 0 || id >= len(tr.Values) || tr.Values[id] == nil {
			return fmt.Errorf("graph output value %d is not computed by any op", id)
		}
	}
	return nil
}

// opErr names the failing op so that a message points into the model.
func opErr(i int, op *onnxio.Op, err error) error {
	return fmt.Errorf("op %d (%s %q): %w", i, op.String(), op.Node, err)
}

// opInput fetches op input j.
func opInput(op *onnxio.Op, vals []*Tensor, j int) (*Tensor, error) {
	if j >= len(op.In) {
		return nil, fmt.Errorf("missing input %d", j)
	}
	id := op.In[j]
	if id < 0 || id >= len(vals) || vals[id] == nil {
		return nil, fmt.Errorf("input value %d is not computed before the op", id)
	}
	return vals[id], nil
}

// opsetOf is the opset deciding an op's semantics; with none recorded,
// the current semantics (13 and later) apply.
func opsetOf(net *onnxio.Network, op *onnxio.Op) int64 {
	switch {
	case op.Opset != 0:
		return op.Opset
	case net.Opset != 0:
		return net.Opset
	}
	return math.MaxInt32
}

func forwardOp(net *onnxio.Network, op *onnxio.Op, vals []*Tensor) (*Tensor, error) {
	return forwardOpAlloc(net, op, vals, freshAlloc, freshAlloc)
}

// forwardOpAlloc is forwardOp with the output allocated by alloc (where
// the op makes a new tensor rather than a view of its input), or by raw
// (contents undefined) where the op writes every element.
func forwardOpAlloc(net *onnxio.Network, op *onnxio.Op, vals []*Tensor, alloc, raw allocFunc) (*Tensor, error) {
	if err := checkKind(op); err != nil {
		return nil, err
	}
	if op.Kind == onnxio.OpNode {
		return nodeForward(op, vals, alloc)
	}
	if family(op.Kind) == famBinary {
		return binaryForward(op, vals, raw)
	}
	x, err := opInput(op, vals, 0)
	if err != nil {
		return nil, err
	}
	switch family(op.Kind) {
	case famDense:
		return denseForwardW(op, x, nil, alloc)
	case famAlias:
		shape, err := aliasShape(op, x.Shape)
		if err != nil {
			return nil, err
		}
		if op.Kind != onnxio.OpCast {
			return &Tensor{Shape: shape, Data: x.Data}, nil
		}
		if !onnxio.IsFloatType(op.CastTo) {
			return nil, fmt.Errorf("cast to %s: only float types are supported", onnxio.TypeName(op.CastTo))
		}
		y := raw(shape)
		for i, v := range x.Data {
			y.Data[i] = onnxio.RoundTo(op.CastTo, v)
		}
		return y, nil
	case famSoftmax:
		outer, d, inner, err := softmaxGeom(op, opsetOf(net, op), x.Shape)
		if err != nil {
			return nil, err
		}
		y := raw(x.Shape)
		softmaxForward(op.Kind == onnxio.OpLogSoftmax, x.Data, y.Data, outer, d, inner)
		return y, nil
	}
	y := raw(x.Shape)
	switch op.Kind {
	case onnxio.OpPRelu:
		slope, idx, err := preluSlope(op, x.Shape)
		if err != nil {
			return nil, err
		}
		for k, v := range x.Data {
			if v < 0 {
				v *= slope[bcAt(idx, k)]
			}
			y.Data[k] = v
		}
	case onnxio.OpBatchNorm:
		a, inner, err := bnCoeffs(op, x.Shape)
		if err != nil {
			return nil, err
		}
		c := len(a)
		for k, v := range x.Data {
			ch := (k / inner) % c
			y.Data[k] = (v-op.Mean[ch])*a[ch] + op.Bias[ch]
		}
	default:
		unaryForward(op, x.Data, y.Data)
	}
	return y, nil
}

// bcAt is idx[k], idx being a broadcast map from bcastIndex (nil: identity).
func bcAt(idx []int, k int) int {
	if idx == nil {
		return k
	}
	return idx[k]
}

// denseForwardW is a Dense op's output for input x, with the product in
// float32 with the weights w32 when they are given, and the output
// allocated by alloc.
func denseForwardW(op *onnxio.Op, x *Tensor, w32 []float32, alloc allocFunc) (*Tensor, error) {
	l := op.Layer
	if l == nil {
		return nil, errors.New("Dense op without a layer")
	}
	if len(l.W)+len(l.W32) != l.Out*l.In || (l.B != nil && len(l.B) != l.Out) {
		return nil, fmt.Errorf("layer %q: %d weights and %d biases for %dx%d", l.Name, len(l.W)+len(l.W32), len(l.B), l.Out, l.In)
	}
	rows, cols := Flat(x)
	if x.Rank() < 2 || cols != l.In {
		return nil, fmt.Errorf("layer %q takes inputs of shape ... x %d, got input shape %s", l.Name, l.In, plain.Shape(x.Shape))
	}
	shape := append(append([]int(nil), x.Shape[:x.Rank()-1]...), l.Out)
	y := alloc(shape)
	beta := 0.0
	if l.B != nil {
		for r := 0; r < rows; r++ {
			copy(y.Data[r*l.Out:(r+1)*l.Out], l.B)
		}
		beta = 1
	}
	if w32 != nil {
		matmulW32(false, true, rows, l.Out, l.In, x.Data, w32, y.Data, beta)
	} else {
		mulW(matmul, true, rows, l.Out, l.In, x.Data, l, y.Data, beta)
	}
	return y, nil
}

// preluSlope checks that the slope broadcasts to x's shape (ONNX
// unidirectional broadcasting) and returns it with its broadcast map.
func preluSlope(op *onnxio.Op, xs []int) ([]float64, []int, error) {
	c := op.Const
	if c == nil {
		return nil, nil, errors.New("PRelu without a slope")
	}
	if len(c.Data) != ShapeSize(c.Shape) {
		return nil, nil, fmt.Errorf("slope %q: %d values for shape %s", c.Name, len(c.Data), plain.Shape(c.Shape))
	}
	bs, err := BroadcastShape(xs, c.Shape)
	if err != nil || !SameShape(bs, xs) {
		return nil, nil, fmt.Errorf("slope %q of shape %s does not broadcast to input shape %s", c.Name, plain.Shape(c.Shape), plain.Shape(xs))
	}
	return c.Data, bcastIndex(xs, c.Shape), nil
}

// bnCoeffs returns the per-channel factor Scale/sqrt(Var+Eps) of an
// inference BatchNormalization over axis 1, and the number of elements per
// channel and sample (the product of the dims after axis 1).
func bnCoeffs(op *onnxio.Op, xs []int) (a []float64, inner int, err error) {
	if len(xs) < 2 {
		return nil, 0, fmt.Errorf("input of rank %d, need at least 2", len(xs))
	}
	c := xs[1]
	if len(op.Scale) != c || len(op.Bias) != c || len(op.Mean) != c || len(op.Var) != c {
		return nil, 0, fmt.Errorf("%d channels in input shape %s, parameters have %d, %d, %d, %d",
			c, plain.Shape(xs), len(op.Scale), len(op.Bias), len(op.Mean), len(op.Var))
	}
	a = make([]float64, c)
	for i := range a {
		a[i] = op.Scale[i] / math.Sqrt(op.Var[i]+op.Eps)
	}
	return a, max(ShapeSize(xs[2:]), 1), nil
}

// operand is one side of a binary op: a value (id >= 0) or the constant.
type operand struct {
	id int
	t  *Tensor
}

func binaryOperands(op *onnxio.Op, vals []*Tensor) (a, b operand, err error) {
	if op.Const == nil {
		if len(op.In) != 2 {
			return a, b, fmt.Errorf("%d inputs, want 2", len(op.In))
		}
		x, err := opInput(op, vals, 0)
		if err != nil {
			return a, b, err
		}
		y, err := opInput(op, vals, 1)
		if err != nil {
			return a, b, err
		}
		return operand{op.In[0], x}, operand{op.In[1], y}, nil
	}
	if len(op.In) != 1 {
		return a, b, fmt.Errorf("%d inputs besides constant %q, want 1", len(op.In), op.Const.Name)
	}
	c := op.Const
	if len(c.Data) != ShapeSize(c.Shape) {
		return a, b, fmt.Errorf("constant %q: %d values for shape %s", c.Name, len(c.Data), plain.Shape(c.Shape))
	}
	x, err := opInput(op, vals, 0)
	if err != nil {
		return a, b, err
	}
	v, k := operand{op.In[0], x}, operand{-1, &Tensor{Shape: c.Shape, Data: c.Data}}
	if op.ConstFirst {
		return k, v, nil
	}
	return v, k, nil
}

// binaryForward writes every element of its output, which alloc may
// therefore leave uncleared.
func binaryForward(op *onnxio.Op, vals []*Tensor, alloc allocFunc) (*Tensor, error) {
	a, b, err := binaryOperands(op, vals)
	if err != nil {
		return nil, err
	}
	shape, err := BroadcastShape(a.t.Shape, b.t.Shape)
	if err != nil {
		return nil, err
	}
	y := alloc(shape)
	w := bcastWalk(shape, a.t.Shape, b.t.Shape)
	sa, sb := w.inner(0), w.inner(1)
	ad, bd := a.t.Data, b.t.Data
	// Elementwise: the pieces give the same bits as one pass.
	parallelChunks(len(y.Data), func(lo, hi int) {
		w.span(lo, hi, func(k, n int, off []int) {
			binaryRow(op.Kind, y.Data[k:k+n], ad[off[0]:], bd[off[1]:], sa, sb)
		})
	})
	return y, nil
}

// binaryRow sets y[i] = a[i·sa] op b[i·sb] for strides sa, sb of 0 or 1.
func binaryRow(kind onnxio.OpKind, y, a, b []float64, sa, sb int) {
	n := len(y)
	switch {
	case sa == 1 && sb == 1:
		a, b = a[:n], b[:n]
		switch kind {
		case onnxio.OpAdd:
			for i := range y {
				y[i] = a[i] + b[i]
			}
		case onnxio.OpSub:
			for i := range y {
				y[i] = a[i] - b[i]
			}
		case onnxio.OpMul:
			for i := range y {
				y[i] = a[i] * b[i]
			}
		case onnxio.OpDiv:
			for i := range y {
				y[i] = a[i] / b[i]
			}
		}
	case sa == 1:
		a, c := a[:n], b[0]
		switch kind {
		case onnxio.OpAdd:
			for i := range y {
				y[i] = a[i] + c
			}
		case onnxio.OpSub:
			for i := range y {
				y[i] = a[i] - c
			}
		case onnxio.OpMul:
			for i := range y {
				y[i] = a[i] * c
			}
		case onnxio.OpDiv:
			for i := range y {
				y[i] = a[i] / c
			}
		}
	case sb == 1:
		c, b := a[0], b[:n]
		switch kind {
		case onnxio.OpAdd:
			for i := range y {
				y[i] = c + b[i]
			}
		case onnxio.OpSub:
			for i := range y {
				y[i] = c - b[i]
			}
		case onnxio.OpMul:
			for i := range y {
				y[i] = c * b[i]
			}
		case onnxio.OpDiv:
			for i := range y {
				y[i] = c / b[i]
			}
		}
	default:
		var v float64
		switch kind {
		case onnxio.OpAdd:
			v = a[0] + b[0]
		case onnxio.OpSub:
			v = a[0] - b[0]
		case onnxio.OpMul:
			v = a[0] * b[0]
		case onnxio.OpDiv:
			v = a[0] / b[0]
		}
		for i := range y {
			y[i] = v
		}
	}
}
