package analysis

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ecprune/ecprune/onnxio"
)

// The op registry: one Kernel per ONNX op type that the extractor leaves
// as an OpNode (everything but dense layers and the ops with kinds of
// their own). Each op_*.go file registers the kernels of one op family in
// its init, so adding an op is one file and one row of the tests.
//
// Kernels see inputs by ONNX position (nil for an absent optional input)
// and work on one direction at a time in JVP and VJP; the generic code
// below loops over the P directions the differentiator carries. Integer
// tensors (shapes, indices) are float64 tensors holding integers; the
// op's InTypes and OutType say which.

// Kernel evaluates one ONNX op type and differentiates it.
type Kernel struct {
	// Check validates an op's attributes before any run (nil: nothing to
	// check). Its error says what is not supported.
	Check func(op *onnxio.Op) error
	// Forward computes the op's output (output op.OutIndex of the node).
	Forward func(op *onnxio.Op, in []*Tensor) (*Tensor, error)
	// ForwardAlloc, when set, is Forward with the output allocated by
	// alloc (zeroed; possibly a buffer recycled from an earlier batch), for
	// ops with large outputs: the evaluator can then reuse their memory
	// across batches. The kernel must not keep the tensor. The evaluator
	// calls it instead of Forward when it is set; register derives
	// Forward from it when Forward is nil.
	ForwardAlloc func(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error)
	// Prepare computes, once per differentiation of the op, what JVP and
	// VJP reuse across directions (a gather map, pooling argmaxes,
	// normalisation statistics); nil: no state.
	Prepare func(op *onnxio.Op, in []*Tensor, out *Tensor) (any, error)
	// JVP returns the output's tangent for one direction, given the
	// inputs' tangents tin (nil where zero), or nil when it is zero. A nil
	// JVP means the op has no derivative (comparisons, argmax, shapes):
	// the differentiator passes nothing through it, and a layer all of
	// whose paths to the outputs cross such ops is analysed with its
	// local objective (local.go).
	JVP func(op *onnxio.Op, in []*Tensor, out *Tensor, st any, tin []*Tensor) (*Tensor, error)
	// VJP adds the pull-back of the output cotangent g (one direction) to
	// gin[k] for every k with gin[k] != nil.
	VJP func(op *onnxio.Op, in []*Tensor, out *Tensor, st any, g *Tensor, gin []*Tensor) error
	// ConcurrentVJP says VJP may run for several directions at once: it
	// only reads st and the inputs, and writes only its gin. Reverse mode
	// then spreads the directions of a large op over the cores.
	ConcurrentVJP bool
}

var kernels = map[string]*Kernel{}

// register adds the kernel of an op type; registering one twice is a
// programmer error.
func register(opType string, k *Kernel) {
	if _, dup := kernels[opType]; dup {
		panic("analysis: op " + opType + " registered twice")
	}
	if k.Forward == nil && k.ForwardAlloc != nil {
		fa := k.ForwardAlloc
		k.Forward = func(op *onnxio.Op, in []*Tensor) (*Tensor, error) { return fa(op, in, freshAlloc) }
	}
	if k.Forward == nil || (k.JVP == nil) != (k.VJP == nil) {
		panic("analysis: op " + opType + ": a kernel needs Forward, and JVP and VJP together")
	}
	kernels[opType] = k
}

// RegisteredOps lists the op types of the registry, sorted.
func RegisteredOps() []string {
	ops := make([]string, 0, len(kernels))
	for t := range kernels {
		ops = append(ops, t)
	}
	sort.Strings(ops)
	return ops
}

// Differentiable reports whether an op carries derivatives: ops with
// kinds of their own always do, OpNode ops when their kernel has them and
// their output is a float tensor.
func Differentiable(op *onnxio.Op) bool {
	if op.Kind != onnxio.OpNode {
		return true
	}
	k := kernels[op.Type]
	return k != nil && k.JVP != nil && isFloatType(op.OutType)
}

func isFloatType(t int32) bool { return t == 0 || onnxio.IsFloatType(t) }

// UnsupportedError lists every op of a network the evaluator cannot run,
// so that a user sees all of them at once.
type UnsupportedError struct {
	Ops []string // "Type (node name): why"
}

func (e *UnsupportedError) Error() string {
	return "the evaluator cannot run " + strings.Join(e.Ops, "; ")
}

// Check reports every op of the network that the evaluator cannot run (as
// an *UnsupportedError), before any work is done.
func Check(net *onnxio.Network) error {
	var bad []string
	seen := map[string]bool{}
	for i := range net.Ops {
		op := &net.Ops[i]
		var why string
		if op.Kind == onnxio.OpNode {
			k := kernels[op.Type]
			switch {
			case k == nil:
				why = "op not supported"
			case k.Check != nil:
				if err := k.Check(op); err != nil {
					why = err.Error()
				}
			}
		} else if err := checkKind(op); err != nil {
			why = err.Error()
		}
		if why == "" {
			continue
		}
		msg := fmt.Sprintf("%s (node %s): %s", op, op.Node, why)
		if why == "op not supported" {
			msg = fmt.Sprintf("%s (node %s)", op, op.Node)
			if seen[op.Type] {
				continue // one mention per unknown op type
			}
			seen[op.Type] = true
		}
		bad = append(bad, msg)
	}
	if len(bad) > 0 {
		return &UnsupportedError{Ops: bad}
	}
	return nil
}

// nodeInputs are an OpNode's inputs by ONNX position (nil when absent).
func nodeInputs(op *onnxio.Op, vals []*Tensor) ([]*Tensor, error) {
	in := make([]*Tensor, len(op.Slots))
	for k, s := range op.Slots {
		if s < 0 {
			continue
		}
		t, err := opInput(op, vals, s)
		if err != nil {
			return nil, err
		}
		in[k] = t
	}
	return in, nil
}

func nodeKernel(op *onnxio.Op) (*Kernel, error) {
	k := kernels[op.Type]
	if k == nil {
		return nil, fmt.Errorf("op %s is not supported", op.Type)
	}
	return k, nil
}

// nodeForward runs an OpNode's kernel, through ForwardAlloc when it has
// one.
func nodeForward(op *onnxio.Op, vals []*Tensor, alloc allocFunc) (*Tensor, error) {
	k, err := nodeKernel(op)
	if err != nil {
		return nil, err
	}
	in, err := nodeInputs(op, vals)
	if err != nil {
		return nil, err
	}
	if k.ForwardAlloc != nil {
		return k.ForwardAlloc(op, in, alloc)
	}
	return k.Forward(op, in)
}

// nodeJVP pushes P directions of tangents through an OpNode, one at a
// time; a nil result is a zero tangent.
func nodeJVP(op *onnxio.Op, vals, tan []*Tensor, p int) (*Tensor, error) {
	if !isFloatType(op.OutType) {
		return nil, nil // integer outputs carry no derivative
	}
	k, err := nodeKernel(op)
	if err != nil {
		return nil, err
	}
	if k.JVP == nil {
		// No derivative: a zero tangent. Layers whose every path to
		// the outputs ends here use their local objective (local.go).
		return nil, nil
	}
	in, err := nodeInputs(op, vals)
	if err != nil {
		return nil, err
	}
	y := vals[op.Out]
	n := y.Len()
	st, err := prepare(k, op, in, y)
	if err != nil {
		return nil, err
	}
	var out *Tensor
	tin := make([]*Tensor, len(in))
	for q := 0; q < p; q++ {
		any := false
		for k, s := range op.Slots {
			tin[k] = nil
			if s < 0 || !isFloatType(op.InTypes[k]) {
				continue
			}
			if t := tan[op.In[s]]; t != nil {
				m := in[k].Len()
				tin[k] = &Tensor{Shape: in[k].Shape, Data: t.Data[q*m : (q+1)*m]}
				any = true
			}
		}
		if !any {
			continue
		}
		t, err := k.JVP(op, in, y, st, tin)
		if err != nil {
			return nil, err
		}
		if t == nil {
			continue
		}
		if t.Len() != n {
			return nil, fmt.Errorf("op %s: tangent of %d values for an output of %d", op.Type, t.Len(), n)
		}
		if out == nil {
			out = NewTensor(withP(p, y.Shape), nil)
		}
		copy(out.Data[q*n:(q+1)*n], t.Data)
	}
	return out, nil
}

// nodeVJP pulls P directions of the output cotangent g back into the
// accumulators of the op's float inputs that need one.
func nodeVJP(op *onnxio.Op, vals []*Tensor, g *Tensor, p int, acc func(id int) []float64, rel []bool) error {
	k, err := nodeKernel(op)
	if err != nil {
		return err
	}
	in, err := nodeInputs(op, vals)
	if err != nil {
		return err
	}
	need := false
	for kk, s := range op.Slots {
		if s >= 0 && rel[op.In[s]] && isFloatType(op.InTypes[kk]) {
			need = true
		}
	}
	if !need || !isFloatType(op.OutType) {
		return nil
	}
	if k.VJP == nil {
		return nil // no derivative: nothing flows back (see nodeJVP)
	}
	y := vals[op.Out]
	n := y.Len()
	st, err := prepare(k, op, in, y)
	if err != nil {
		return err
	}
	dst := make([][]float64, len(in))
	for kk, s := range op.Slots {
		if s >= 0 && rel[op.In[s]] && isFloatType(op.InTypes[kk]) {
			dst[kk] = acc(op.In[s])
		}
	}
	one := func(q int) error {
		gin := make([]*Tensor, len(in))
		for kk := range in {
			if dst[kk] != nil {
				m := in[kk].Len()
				gin[kk] = &Tensor{Shape: in[kk].Shape, Data: dst[kk][q*m : (q+1)*m]}
			}
		}
		gq := &Tensor{Shape: y.Shape, Data: g.Data[q*n : (q+1)*n]}
		return k.VJP(op, in, y, st, gq, gin)
	}
	if k.ConcurrentVJP {
		errs := make([]error, p)
		eachDirection(p, n, func(q int) { errs[q] = one(q) })
		return errors.Join(errs...)
	}
	for q := 0; q < p; q++ {
		if err := one(q); err != nil {
			return err
		}
	}
	return nil
}

func prepare(k *Kernel, op *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
	if k.Prepare == nil {
		return nil, nil
	}
	return k.Prepare(op, in, y)
}

// --- helpers for kernels ---

// errNoInput is returned by kernels whose required input is absent.
var errNoInput = errors.New("a required input is absent")

// need returns in[k] or an error when it is absent.
func need(in []*Tensor, k int) (*Tensor, error) {
	if k >= len(in) || in[k] == nil {
		return nil, fmt.Errorf("input %d: %w", k, errNoInput)
	}
	return in[k], nil
}

// need2 returns the first two inputs, the usual data operands of a binary
// op, or an error when one is absent.
func need2(in []*Tensor) (a, b *Tensor, err error) {
	if a, err = need(in, 0); err != nil {
		return nil, nil, err
	}
	b, err = need(in, 1)
	return a, b, err
}

// need3 returns the first three inputs (a scatter's data, indices and
// updates), or an error when one is absent.
func need3(in []*Tensor) (a, b, c *Tensor, err error) {
	if a, b, err = need2(in); err != nil {
		return nil, nil, nil, err
	}
	c, err = need(in, 2)
	return a, b, c, err
}

// intsOf reads an integer tensor (shapes, axes, indices) as ints.
func intsOf(t *Tensor) []int {
	v := make([]int, len(t.Data))
	for i, f := range t.Data {
		v[i] = int(f)
	}
	return v
}

// normAxis maps a possibly negative axis into [0, r).
func normAxis(a, r int) (int, error) {
	if a < -r || a >= r {
		return 0, fmt.Errorf("axis %d out of range for rank %d", a, r)
	}
	if a < 0 {
		a += r
	}
	return a, nil
}

// strides are the row-major strides of a shape.
func strides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// A gather map describes an op whose output elements are copies of input
// elements (Transpose, Slice, Gather on data, Concat, Expand, Pad, Tile,
// Split, DepthToSpace...): out[k] = in[Src[k]][Pos[k]], or Fill where Src
// is -1. Such an op is linear in its data inputs, so its JVP applies the
// same map to the tangents and its VJP scatters the cotangent back.
type gatherMap struct {
	Shape []int // output shape
	Src   []int // input position per output element (-1: Fill)
	Pos   []int // element index in that input
	Fill  float64
	// One is set when every element comes from input One (Src is nil).
	One int
	// pieces, when set, replace Src and Pos: each copies a strided block
	// of one input to a strided block of the output (a transpose, a
	// strided slice, a broadcast, the inputs of a Concat), walked row by
	// row instead of looked up per element. Every output element is
	// written by at most one piece; elements of no piece get Fill.
	pieces []piece
}

// A piece is a strided copy from input src: its walk reads the output
// position as operand 0 and the input position as operand 1.
type piece struct {
	src int
	w   walk
}

// stridedMap is the gather map of a strided view of input 0: output
// coordinates idx read element base + Σ idx[i]·st[i].
func stridedMap(shape []int, base int, st []int) *gatherMap {
	return &gatherMap{Shape: shape, pieces: []piece{{w: newWalk(shape, []int{0, base}, strides(shape), st)}}}
}

// gatherKernel builds a kernel from a function computing an op's gather
// map from its inputs (the data inputs are read only through the map).
func gatherKernel(mapOf func(op *onnxio.Op, in []*Tensor) (*gatherMap, error), check func(op *onnxio.Op) error) *Kernel {
	return &Kernel{
		Check:         check,
		ConcurrentVJP: true,
		ForwardAlloc: func(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
			m, err := mapOf(op, in)
			if err != nil {
				return nil, err
			}
			out := alloc(m.Shape)
			m.applyInto(out.Data, in, m.Fill)
			return out, nil
		},
		Prepare: func(op *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) { return mapOf(op, in) },
		JVP: func(_ *onnxio.Op, _ []*Tensor, _ *Tensor, st any, tin []*Tensor) (*Tensor, error) {
			return st.(*gatherMap).apply(tin, 0), nil
		},
		VJP: func(_ *onnxio.Op, _ []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
			m := st.(*gatherMap)
			if m.pieces != nil {
				for _, pc := range m.pieces {
					if d := gin[pc.src]; d != nil {
						pc.scatterAdd(d.Data, g.Data)
					}
				}
				return nil
			}
			if m.Src == nil && m.One >= 0 {
				// One source (Transpose, Slice, Expand, Gather): no
				// per-element source lookup.
				if d := gin[m.One]; d != nil {
					for k, v := range g.Data {
						d.Data[m.Pos[k]] += v
					}
				}
				return nil
			}
			for k, v := range g.Data {
				s := m.One
				if m.Src != nil {
					s = m.Src[k]
				}
				if s >= 0 && gin[s] != nil {
					gin[s].Data[m.Pos[k]] += v
				}
			}
			return nil
		},
	}
}

// apply builds the output of a gather map from src (a nil src input reads
// as zeros); unmapped elements get fill.
func (m *gatherMap) apply(src []*Tensor, fill float64) *Tensor {
	out := NewTensor(m.Shape, nil)
	m.applyInto(out.Data, src, fill)
	return out
}

// applyInto is apply writing into out (zeros, of the map's size).
func (m *gatherMap) applyInto(out []float64, src []*Tensor, fill float64) {
	if m.pieces != nil {
		covered := 0
		for _, pc := range m.pieces {
			covered += pc.w.n
			if x := src[pc.src]; x != nil {
				pc.gather(out, x.Data)
			}
		}
		if covered < len(out) && fill != 0 {
			// Only a map whose pieces leave gaps reads its fill: mark
			// the gaps by a pass over the pieces.
			hit := make([]bool, len(out))
			for _, pc := range m.pieces {
				so := pc.w.inner(0)
				pc.w.rows(func(_, n int, off []int) {
					for i := range n {
						hit[off[0]+i*so] = true
					}
				})
			}
			for k, h := range hit {
				if !h {
					out[k] = fill
				}
			}
		}
		return
	}
	for k := range out {
		s := m.One
		if m.Src != nil {
			s = m.Src[k]
		}
		switch {
		case s < 0:
			out[k] = fill
		case src[s] != nil:
			out[k] = src[s].Data[m.Pos[k]]
		}
	}
}

// gather copies the piece's input elements from x into out.
func (pc *piece) gather(out, x []float64) {
	so, si := pc.w.inner(0), pc.w.inner(1)
	pc.w.rows(func(_, n int, off []int) {
		if so == 1 {
			gatherRow(out[off[0]:off[0]+n], x, off[1], si)
			return
		}
		for i := range n {
			out[off[0]+i*so] = x[off[1]+i*si]
		}
	})
}

// scatterAdd adds the piece's output elements of g into its input
// positions in d, in the order of the walk.
func (pc *piece) scatterAdd(d, g []float64) {
	so, si := pc.w.inner(0), pc.w.inner(1)
	pc.w.rows(func(_, n int, off []int) {
		if so == 1 {
			scatterAddRow(d, g[off[0]:off[0]+n], off[1], si)
			return
		}
		for i := range n {
			d[off[1]+i*si] += g[off[0]+i*so]
		}
	})
}

// sameShape reports whether tensors' shapes match (for kernel checks).
func sameShape(a, b *Tensor) bool { return slices.Equal(a.Shape, b.Shape) }
