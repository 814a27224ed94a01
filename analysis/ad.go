package analysis

import (
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/ecprune/ecprune/onnxio"
)

// Both modes carry P directions at once: a tangent or cotangent of a value
// of shape S has shape [P, S...], direction p being the block
// Data[p*size(S) : (p+1)*size(S)]. Batching directions turns the Dense
// products into single large GEMMs.

// JVP is forward-mode differentiation: it pushes the tangents seed (shape
// [P, ...shape of value from]) through every op after the producer of
// value from, linearised at the trace tr, and returns one tangent per graph
// output (shape [P, ...output shape], in net.Outputs order). Dense layers
// carry tangents through W only (dz = dx W^T); Cast is straight-through.
// Ops that do not depend on from are skipped. Returned tensors are fresh or
// shared only with internal tangents, never with seed.
func JVP(net *onnxio.Network, tr *Trace, from int, seed *Tensor) ([]*Tensor, error) {
	return JVPSum(net, tr, []int{from}, []*Tensor{seed})
}

// JVPSum is the sum of the JVPs of several seeds, seeds[k] on value
// from[k] (all with the same number of directions P), in one forward
// pass: each seed joins the tangent of its value where that value is
// produced. By linearity this equals summing JVP's results, at the cost
// of one pass instead of one per seed (ec+'s refit needs J v for a v
// spread over the biases of every layer).
func JVPSum(net *onnxio.Network, tr *Trace, from []int, seeds []*Tensor) ([]*Tensor, error) {
	return jvpSum(net, tr, from, seeds, matmul)
}

// JVPSum32 is JVPSum with the Dense products in float32 (everything else
// in float64), for callers whose own error is far above float32 rounding
// (quantities built on probe estimates).
func JVPSum32(net *onnxio.Network, tr *Trace, from []int, seeds []*Tensor) ([]*Tensor, error) {
	return jvpSum(net, tr, from, seeds, matmul32)
}

// VJP32 is VJP with the Dense products in float32, as JVPSum32.
func VJP32(net *onnxio.Network, tr *Trace, outCot []*Tensor, want []int) (map[int]*Tensor, error) {
	return vjp(net, tr, outCot, want, matmul32, false)
}

func jvpSum(net *onnxio.Network, tr *Trace, from []int, seeds []*Tensor, mm matmulFunc) ([]*Tensor, error) {
	if len(from) == 0 || len(from) != len(seeds) {
		return nil, fmt.Errorf("JVP: %d values for %d seeds", len(from), len(seeds))
	}
	if len(tr.Values) != len(net.Values) {
		return nil, fmt.Errorf("JVP: trace has %d values, network %d", len(tr.Values), len(net.Values))
	}
	p := -1
	producer := make(map[int]int, len(from)) // value id -> op index, -1 for a graph input
	at := make(map[int]*Tensor, len(from))
	// The first op writing each value, found in one scan: one scan per
	// seed would be quadratic in the depth (a seed per layer's bias).
	firstOp := make([]int32, len(tr.Values))
	for i := range firstOp {
		firstOp[i] = -1
	}
	for i := len(net.Ops) - 1; i >= 0; i-- {
		if o := net.Ops[i].Out; o >= 0 && o < len(firstOp) {
			firstOp[o] = int32(i)
		}
	}
	start := len(net.Ops)
	for k, id := range from {
		if id < 0 || id >= len(tr.Values) || tr.Values[id] == nil {
			return nil, fmt.Errorf("JVP: value %d is not in the trace", id)
		}
		v, seed := tr.Values[id], seeds[k]
		if seed == nil || seed.Rank() != v.Rank()+1 || !SameShape(seed.Shape[1:], v.Shape) || len(seed.Data) != ShapeSize(seed.Shape) {
			got := "none"
			if seed != nil {
				got = plain.Shape(seed.Shape)
			}
			return nil, fmt.Errorf("JVP: seed shape %s, want P x %s", got, plain.Shape(v.Shape))
		}
		if p >= 0 && seed.Shape[0] != p {
			return nil, fmt.Errorf("JVP: seeds with %d and %d directions", p, seed.Shape[0])
		}
		if _, dup := at[id]; dup {
			return nil, fmt.Errorf("JVP: value %d seeded twice", id)
		}
		p = seed.Shape[0]
		at[id] = seed
		producer[id] = int(firstOp[id])
		start = min(start, producer[id]+1)
	}
	last := lastUse(net)
	tan := make([]*Tensor, len(tr.Values))
	for id, i := range producer {
		if i < start {
			tan[id] = at[id]
		}
	}
	for i := start; i < len(net.Ops); i++ {
		op := &net.Ops[i]
		live := false
		for _, id := range op.In {
			if id < 0 || id >= len(tan) {
				return nil, opErr(i, op, fmt.Errorf("input value id %d out of range", id))
			}
			live = live || tan[id] != nil
		}
		seed, seeded := at[op.Out]
		if seeded && producer[op.Out] != i {
			seeded = false // produced earlier (and already seeded there)
		}
		if live {
			t, err := jvpOp(net, op, tr.Values, tan, p, mm)
			if err != nil {
				return nil, opErr(i, op, fmt.Errorf("JVP: %w", err))
			}
			if seeded && t == nil {
				t = seed
			} else if seeded {
				// A fresh sum: t may share its data with an input's tangent.
				sum := t.Clone()
				addTo(sum.Data, seed.Data)
				t = sum
			}
			tan[op.Out] = t
		} else if seeded {
			tan[op.Out] = seed
		}
		for _, id := range op.In {
			if last[id] == i {
				tan[id] = nil // let the GC have it: tangents are P times a value's size
			}
		}
	}
	outs := make([]*Tensor, len(net.Outputs))
	seen := map[*float64]bool{}
	for _, seed := range seeds {
		if len(seed.Data) > 0 {
			seen[&seed.Data[0]] = true
		}
	}
	for k, id := range net.Outputs {
		t := tan[id]
		if t == nil {
			outs[k] = NewTensor(withP(p, tr.Values[id].Shape), nil)
			continue
		}
		if len(t.Data) > 0 {
			if seen[&t.Data[0]] {
				t = t.Clone()
			}
			seen[&t.Data[0]] = true
		}
		outs[k] = t
	}
	return outs, nil
}

// lastUse is, per value id, the index of the last op reading it
// (len(net.Ops) for graph outputs, -1 for unread values).
func lastUse(net *onnxio.Network) []int {
	last := make([]int, len(net.Values))
	for i := range last {
		last[i] = -1
	}
	for i := range net.Ops {
		for _, id := range net.Ops[i].In {
			if id >= 0 && id < len(last) {
				last[id] = i
			}
		}
	}
	for _, id := range net.Outputs {
		if id >= 0 && id < len(last) {
			last[id] = len(net.Ops)
		}
	}
	return last
}

func jvpOp(net *onnxio.Network, op *onnxio.Op, vals, tan []*Tensor, p int, mm matmulFunc) (*Tensor, error) {
	y := vals[op.Out]
	if y == nil {
		return nil, errors.New("output not in the trace")
	}
	if op.Kind == onnxio.OpNode {
		return nodeJVP(op, vals, tan, p)
	}
	out := NewTensor(withP(p, y.Shape), nil)
	if family(op.Kind) == famBinary {
		a, b, err := binaryOperands(op, vals)
		if err != nil {
			return nil, err
		}
		var ta, tb *Tensor
		if a.id >= 0 {
			ta = tan[a.id]
		}
		if b.id >= 0 {
			tb = tan[b.id]
		}
		binaryJVP(op.Kind, a.t, b.t, y, ta, tb, out.Data)
		return out, nil
	}
	x, err := opInput(op, vals, 0)
	if err != nil {
		return nil, err
	}
	dx := tan[op.In[0]]
	switch family(op.Kind) {
	case famDense:
		l := op.Layer
		if l == nil {
			return nil, errors.New("Dense op without a layer")
		}
		rows, _ := Flat(x)
		mulW(mm, true, p*rows, l.Out, l.In, dx.Data, l, out.Data, 0)
	case famAlias:
		out.Data = dx.Data // the layout is unchanged; tangents are never written in place
	case famSoftmax:
		outer, d, inner, err := softmaxGeom(op, opsetOf(net, op), x.Shape)
		if err != nil {
			return nil, err
		}
		softmaxJVP(op.Kind == onnxio.OpLogSoftmax, y.Data, dx.Data, out.Data, outer, d, inner)
	default:
		d, err := diagDeriv(op, x, y)
		if err != nil {
			return nil, err
		}
		n := len(d)
		for off := 0; off < len(out.Data); off += n {
			o, s := out.Data[off:off+n], dx.Data[off:off+n]
			for k, dk := range d {
				o[k] = dk * s[k]
			}
		}
	}
	return out, nil
}

// diagDeriv is the derivative of an elementwise op at every element of x
// (y = op(x) from the trace).
func diagDeriv(op *onnxio.Op, x, y *Tensor) ([]float64, error) {
	return diagDerivInto(op, x, y, make([]float64, len(x.Data)))
}

// diagDerivInto is diagDeriv written into d (len(x.Data) elements, every
// one of them written).
func diagDerivInto(op *onnxio.Op, x, y *Tensor, d []float64) ([]float64, error) {
	switch op.Kind {
	case onnxio.OpPRelu:
		slope, idx, err := preluSlope(op, x.Shape)
		if err != nil {
			return nil, err
		}
		for k, v := range x.Data {
			d[k] = 1
			if v < 0 {
				d[k] = slope[bcAt(idx, k)]
			}
		}
	case onnxio.OpBatchNorm:
		a, inner, err := bnCoeffs(op, x.Shape)
		if err != nil {
			return nil, err
		}
		for k := range d {
			d[k] = a[(k/inner)%len(a)]
		}
	default:
		// Elementwise, so the pieces give the same bits as one loop.
		least := 1 << 16
		switch op.Kind {
		case onnxio.OpTanh, onnxio.OpSigmoid, onnxio.OpElu, onnxio.OpSelu, onnxio.OpSoftplus, onnxio.OpGelu, onnxio.OpErf:
			least = 1 << 12 // transcendental: tens of ns per element
		}
		xd, yd := x.Data, y.Data[:len(x.Data)]
		parallelAbove(len(xd), least, func(lo, hi int) { unaryDeriv(op, xd[lo:hi], yd[lo:hi], d[lo:hi]) })
	}
	return d, nil
}

// binaryFactors returns the partial derivatives of y = a op b with respect
// to the broadcast operands at each output element: as slices, or as the
// constants ca, cb when the slices are nil (Add, Sub, and a one-element
// factor). A slice may be an operand's own data (Mul by a tensor of the
// output's layout): callers only read it.
func binaryFactors(kind onnxio.OpKind, a, b, y *Tensor) (ga, gb []float64, ca, cb float64) {
	return binaryFactorsFor(kind, a, b, y, true, true)
}

// binaryFactorsFor is binaryFactors computing only the factors asked for
// (the others are nil and 0): reverse mode needs none for a constant
// operand, and building a factor costs a pass over the output.
func binaryFactorsFor(kind onnxio.OpKind, a, b, y *Tensor, needA, needB bool) (ga, gb []float64, ca, cb float64) {
	switch kind {
	case onnxio.OpAdd:
		return nil, nil, 1, 1
	case onnxio.OpSub:
		return nil, nil, 1, -1
	}
	n := len(y.Data)
	if kind == onnxio.OpMul {
		if needA {
			ga, ca = broadcastFactor(b, y.Shape, n)
		}
		if needB {
			gb, cb = broadcastFactor(a, y.Shape, n)
		}
		return ga, gb, ca, cb
	}
	// Div: d(a/b) = da/b - (a/b) db/b.
	if needA && len(b.Data) == 1 {
		ca = 1 / b.Data[0]
		needA = false
	}
	if !needA && !needB {
		return nil, nil, ca, 0
	}
	ib := bcastIndex(y.Shape, b.Shape)
	if needA {
		ga = make([]float64, n)
		for k := range ga {
			ga[k] = 1 / b.Data[bcAt(ib, k)]
		}
	}
	if needB {
		gb = make([]float64, n)
		for k := range gb {
			gb[k] = -y.Data[k] / b.Data[bcAt(ib, k)]
		}
	}
	return ga, gb, ca, 0
}

// broadcastFactor is t read at each of n output elements of the given
// shape: t's own data when it has the output's layout, the constant c (and
// a nil slice) when t has one element, else a broadcast copy.
func broadcastFactor(t *Tensor, shape []int, n int) ([]float64, float64) {
	switch len(t.Data) {
	case n:
		return t.Data, 0
	case 1:
		return nil, t.Data[0]
	}
	idx := bcastIndex(shape, t.Shape)
	f := make([]float64, n)
	for k := range f {
		f[k] = t.Data[idx[k]]
	}
	return f, 0
}

// binaryJVP sets dy = ga*da + gb*db over P directions; ta or tb nil is a
// zero tangent (a constant, or a value independent of the seed).
func binaryJVP(kind onnxio.OpKind, a, b, y, ta, tb *Tensor, dy []float64) {
	ga, gb, ca, cb := binaryFactors(kind, a, b, y)
	n := len(y.Data)
	clear(dy)
	for _, s := range []struct {
		t, op *Tensor
		g     []float64
		c     float64
	}{{ta, a, ga, ca}, {tb, b, gb, cb}} {
		if s.t == nil {
			continue
		}
		idx := bcastIndex(y.Shape, s.op.Shape)
		m := s.op.Len()
		for p := 0; p*n < len(dy); p++ {
			o, src := dy[p*n:(p+1)*n], s.t.Data[p*m:(p+1)*m]
			switch {
			case idx == nil && s.g == nil:
				for k := range o {
					o[k] += s.c * src[k]
				}
			case idx == nil:
				for k := range o {
					o[k] += s.g[k] * src[k]
				}
			case s.g == nil:
				for k := range o {
					o[k] += s.c * src[idx[k]]
				}
			default:
				for k := range o {
					o[k] += s.g[k] * src[idx[k]]
				}
			}
		}
	}
}

// VJP is reverse-mode differentiation: it pulls the output cotangents
// outCot (one per graph output, shape [P, ...output shape]; a nil entry is
// zero, at least one must be given) back through the network linearised at
// tr, and returns the cotangent (shape [P, ...value shape]) at each value
// id in want, e.g. dy/dz for the Dense outputs. Only ops between the wanted
// values and the outputs are visited; broadcasting sums cotangents back to
// operand shapes. outCot is not modified.
func VJP(net *onnxio.Network, tr *Trace, outCot []*Tensor, want []int) (map[int]*Tensor, error) {
	return vjp(net, tr, outCot, want, matmul, false)
}

// vjp is VJP with the Dense products done by mm (matmul, or matmul32 for
// probe estimates). squared says the caller uses the results only through
// their squares: an Add may then hand its cotangent on to an operand as
// that operand's accumulator, as an alias op does, instead of adding it
// into zeros. The two differ only where an element is -0 (0 + -0 is +0);
// no pull-back divides by a cotangent or compares one, so a signed zero
// changes no nonzero value downstream, and its square is +0 either way.
func vjp(net *onnxio.Network, tr *Trace, outCot []*Tensor, want []int, mm matmulFunc, squared bool) (map[int]*Tensor, error) {
	if len(tr.Values) != len(net.Values) {
		return nil, fmt.Errorf("VJP: trace has %d values, network %d", len(tr.Values), len(net.Values))
	}
	if len(outCot) != len(net.Outputs) {
		return nil, fmt.Errorf("VJP: %d output cotangents for %d outputs", len(outCot), len(net.Outputs))
	}
	p := -1
	for k, g := range outCot {
		if g == nil {
			continue
		}
		y := tr.Values[net.Outputs[k]]
		if g.Rank() != y.Rank()+1 || !SameShape(g.Shape[1:], y.Shape) || len(g.Data) != ShapeSize(g.Shape) || (p >= 0 && g.Shape[0] != p) {
			return nil, fmt.Errorf("VJP: cotangent %d has shape %s, want P x %s with one P for all", k, plain.Shape(g.Shape), plain.Shape(y.Shape))
		}
		p = g.Shape[0]
	}
	if p < 0 {
		return nil, errors.New("VJP: every output cotangent is nil")
	}
	wanted := make([]bool, len(tr.Values))
	rel := make([]bool, len(tr.Values)) // depends on a wanted value: worth a cotangent
	for _, w := range want {
		if w < 0 || w >= len(tr.Values) || tr.Values[w] == nil {
			return nil, fmt.Errorf("VJP: wanted value %d is not in the trace", w)
		}
		wanted[w], rel[w] = true, true
	}
	for i := range net.Ops {
		for _, id := range net.Ops[i].In {
			if id >= 0 && id < len(rel) && rel[id] {
				rel[net.Ops[i].Out] = true
			}
		}
	}
	ar := tr.arena
	cot := make([]*Tensor, len(tr.Values))
	for k, id := range net.Outputs {
		if g := outCot[k]; g != nil && rel[id] {
			if cot[id] == nil {
				// A copy: ops accumulate into it.
				cot[id] = &Tensor{Shape: append([]int(nil), g.Shape...), Data: ar.zerosOrFresh(len(g.Data))}
				copy(cot[id].Data, g.Data)
			} else {
				addTo(cot[id].Data, g.Data)
			}
		}
	}
	for i := len(net.Ops) - 1; i >= 0; i-- {
		op := &net.Ops[i]
		g := cot[op.Out]
		if g == nil {
			continue
		}
		if err := vjpOp(net, op, tr.Values, cot, rel, wanted[op.Out], squared, g, p, mm, ar); err != nil {
			return nil, opErr(i, op, fmt.Errorf("VJP: %w", err))
		}
		if !wanted[op.Out] {
			cot[op.Out] = nil // every reader of it has been visited
			if !handedOn(op, cot, g) {
				ar.release(g.Data)
			}
		}
	}
	res := make(map[int]*Tensor, len(want))
	for _, w := range want {
		if cot[w] == nil {
			cot[w] = ar.alloc()(withP(p, tr.Values[w].Shape))
		}
		res[w] = cot[w]
	}
	return res, nil
}

// handedOn reports whether the cotangent g of op's output became the
// cotangent of one of its inputs (an alias op passes its buffer on), so
// that it is still live.
func handedOn(op *onnxio.Op, cot []*Tensor, g *Tensor) bool {
	if len(g.Data) == 0 {
		return false
	}
	for _, id := range op.In {
		if id >= 0 && id < len(cot) && cot[id] != nil && len(cot[id].Data) > 0 && &cot[id].Data[0] == &g.Data[0] {
			return true
		}
	}
	return false
}

func addTo(dst, src []float64) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] += v
	}
}

// vjpOp accumulates the op's pull-back of g into the cotangents of its
// relevant inputs, allocated from ar (nil: the Go heap). keepG says g is
// returned to the caller, so it must not become (aliased as) an input's
// accumulator; squared is vjp's.
func vjpOp(net *onnxio.Network, op *onnxio.Op, vals, cot []*Tensor, rel []bool, keepG, squared bool, g *Tensor, p int, mm matmulFunc, ar *arena) error {
	y := vals[op.Out]
	acc := func(id int) []float64 {
		if cot[id] == nil {
			cot[id] = ar.alloc()(withP(p, vals[id].Shape))
		}
		return cot[id].Data
	}
	if op.Kind == onnxio.OpNode {
		return nodeVJP(op, vals, g, p, acc, rel)
	}
	if family(op.Kind) == famBinary {
		a, b, err := binaryOperands(op, vals)
		if err != nil {
			return err
		}
		if squared && op.Kind == onnxio.OpAdd && !keepG && a.id != b.id {
			// Hand g on to one operand of the output's layout that has
			// no cotangent yet (see vjp's squared).
			for _, o := range []*operand{&a, &b} {
				if o.id >= 0 && rel[o.id] && cot[o.id] == nil && o.t.Len() == y.Len() {
					cot[o.id] = &Tensor{Shape: withP(p, o.t.Shape), Data: g.Data}
					o.id = -1 // done
					break
				}
			}
		}
		return binaryVJP(op.Kind, a, b, y, g, p, rel, acc, ar)
	}
	in := op.In[0]
	if !rel[in] {
		return nil
	}
	x := vals[in]
	switch family(op.Kind) {
	case famDense:
		l := op.Layer
		if l == nil {
			return errors.New("Dense op without a layer")
		}
		rows, _ := Flat(x)
		mulW(mm, false, p*rows, l.In, l.Out, g.Data, l, acc(in), 1)
	case famAlias:
		if cot[in] == nil && !keepG {
			cot[in] = &Tensor{Shape: withP(p, x.Shape), Data: g.Data} // g dies here; reuse it
		} else {
			addTo(acc(in), g.Data)
		}
	case famSoftmax:
		outer, d, inner, err := softmaxGeom(op, opsetOf(net, op), x.Shape)
		if err != nil {
			return err
		}
		dst, n := acc(in), len(y.Data)
		eachDirection(p, n, func(q int) {
			softmaxVJP(op.Kind == onnxio.OpLogSoftmax, y.Data, g.Data[q*n:(q+1)*n], dst[q*n:(q+1)*n], outer, d, inner)
		})
	default:
		d, err := diagDerivInto(op, x, y, ar.rawOrFresh(len(x.Data)))
		if err != nil {
			return err
		}
		defer ar.release(d)
		dst := acc(in)
		n := len(d)
		eachDirection(len(dst)/max(n, 1), n, func(q int) {
			o, s := dst[q*n:(q+1)*n], g.Data[q*n:(q+1)*n]
			for k, dk := range d {
				o[k] += dk * s[k]
			}
		})
	}
	return nil
}

// binaryVJP is vjpOp for Add, Sub, Mul and Div: each operand that needs
// a cotangent gets, per direction, the sum over the output elements it is
// broadcast to of its partial derivative there times g. The partial
// derivative is a constant (Add, Sub; Div by one element), the other
// operand (Mul), or for Div the reciprocal of b (by a) or -y/b (by b),
// computed once for all directions. Operands and factors are read through
// walks, never through a position per output element.
func binaryVJP(kind onnxio.OpKind, a, b operand, y, g *Tensor, p int, rel []bool, acc func(int) []float64, ar *arena) error {
	needA, needB := a.id >= 0 && rel[a.id], b.id >= 0 && rel[b.id]
	n := len(y.Data)
	// side is the pull-back into one operand: factor f (nil: constant c)
	// of shape fShape.
	type side struct {
		o      operand
		f      []float64
		fShape []int
		c      float64
	}
	var sides []side
	var scratch [][]float64
	defer func() {
		for _, s := range scratch {
			ar.release(s)
		}
	}()
	switch kind {
	case onnxio.OpAdd, onnxio.OpSub:
		cb := 1.0
		if kind == onnxio.OpSub {
			cb = -1
		}
		sides = []side{{o: a, c: 1}, {o: b, c: cb}}
	case onnxio.OpMul:
		sides = []side{{o: a, f: b.t.Data, fShape: b.t.Shape}, {o: b, f: a.t.Data, fShape: a.t.Shape}}
	case onnxio.OpDiv:
		// d(a/b) = da/b - (a/b) db/b.
		sa := side{o: a}
		switch {
		case !needA:
		case len(b.t.Data) == 1:
			sa.c = 1 / b.t.Data[0]
		default:
			r := ar.rawOrFresh(len(b.t.Data))
			scratch = append(scratch, r)
			for j, v := range b.t.Data {
				r[j] = 1 / v
			}
			sa.f, sa.fShape = r, b.t.Shape
		}
		sb := side{o: b}
		if needB {
			f := ar.rawOrFresh(n)
			scratch = append(scratch, f)
			w := bcastWalk(y.Shape, b.t.Shape)
			s := w.inner(0)
			w.rows(func(k, m int, off []int) {
				yr, fr := y.Data[k:k+m], f[k:k+m]
				if s == 0 {
					d := b.t.Data[off[0]]
					for i, v := range yr {
						fr[i] = -v / d
					}
					return
				}
				br := b.t.Data[off[0] : off[0]+m]
				for i, v := range yr {
					fr[i] = -v / br[i]
				}
			})
			sb.f, sb.fShape = f, y.Shape
		}
		sides = []side{sa, sb}
	default:
		return fmt.Errorf("op kind %v is not a binary op", kind)
	}
	for _, s := range sides {
		if s.o.id < 0 || !rel[s.o.id] {
			continue
		}
		if s.f != nil && len(s.f) == 1 {
			s.f, s.c = nil, s.f[0]
		}
		dst := acc(s.o.id)
		m := s.o.t.Len()
		fShape := s.fShape
		if s.f == nil {
			fShape = nil // a constant: read nowhere
		}
		w := bcastWalk(y.Shape, s.o.t.Shape, fShape)
		sd, sf := w.inner(0), w.inner(1)
		eachDirection(p, n, func(q int) {
			src, d := g.Data[q*n:(q+1)*n], dst[q*m:(q+1)*m]
			w.rows(func(k, l int, off []int) {
				pullRow(d, src[k:k+l], off[0], sd, s.f, off[1], sf, s.c)
			})
		})
	}
	return nil
}

// pullRow adds f[fo+i·sf]·g[i] (c·g[i] when f is nil) to d[do+i·sd],
// strides 0 or 1, in order of i.
func pullRow(d, g []float64, do, sd int, f []float64, fo, sf int, c float64) {
	n := len(g)
	switch {
	case sd == 1 && f == nil:
		d := d[do : do+n]
		for i, v := range g {
			d[i] += c * v
		}
	case sd == 1 && sf == 1:
		d, f := d[do:do+n], f[fo:fo+n]
		for i, v := range g {
			d[i] += f[i] * v
		}
	case sd == 1:
		d, fv := d[do:do+n], f[fo]
		for i, v := range g {
			d[i] += fv * v
		}
	case f == nil:
		acc := d[do]
		for _, v := range g {
			acc += c * v
		}
		d[do] = acc
	case sf == 1:
		acc, f := d[do], f[fo:fo+n]
		for i, v := range g {
			acc += f[i] * v
		}
		d[do] = acc
	default:
		acc, fv := d[do], f[fo]
		for _, v := range g {
			acc += fv * v
		}
		d[do] = acc
	}
}

// eachDirection calls f(q) for the p tangent directions q, on GOMAXPROCS
// goroutines when the p x n elements are enough to be worth it. Each
// direction must write only its own part of the output, so the result is
// the same whatever the split.
func eachDirection(p, n int, f func(q int)) {
	if p < 2 || p*n < 1<<16 {
		for q := 0; q < p; q++ {
			f(q)
		}
		return
	}
	parallelAbove(p, 2, func(lo, hi int) {
		for q := lo; q < hi; q++ {
			f(q)
		}
	})
}

// vjp32 is the reverse pass of probe estimates in float32: the same
// pull-backs as vjp, with float32 cotangents and float32 products (the
// estimate's sampling noise dwarfs float32 rounding), so that a batch of P
// directions moves half the memory and runs at the BLAS's float32 speed.
// It handles the ops of dense chains: Dense, the aliases and the
// elementwise ops with a diagonal derivative; ok is false when a value
// between want and the outputs is made by another op (the caller then uses
// vjp). outCot holds one [P, output shape] slice per graph output (nil:
// zero) and becomes the function's; the results are [P, value shape].
// Buffers come from and may be returned to the float32 pool (putBuf).
func vjp32(net *onnxio.Network, tr *Trace, outCot [][]float32, p int, want []int) (res map[int][]float32, ok bool) {
	w32 := tr.w32
	if w32 == nil {
		w32 = layerF32
	}
	wanted := make([]bool, len(tr.Values))
	rel := make([]bool, len(tr.Values))
	for _, w := range want {
		if w < 0 || w >= len(tr.Values) || tr.Values[w] == nil {
			return nil, false
		}
		wanted[w], rel[w] = true, true
	}
	for i := range net.Ops {
		for _, id := range net.Ops[i].In {
			if id >= 0 && id < len(rel) && rel[id] {
				rel[net.Ops[i].Out] = true
			}
		}
	}
	for i := range net.Ops {
		op := &net.Ops[i]
		pulls := false
		for _, id := range op.In {
			pulls = pulls || id >= 0 && id < len(rel) && rel[id]
		}
		if !pulls {
			continue
		}
		switch family(op.Kind) {
		case famDense, famAlias, famDiag:
			if len(op.In) != 1 || (family(op.Kind) == famDense && op.Layer == nil) {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	cot := make([][]float32, len(tr.Values))
	for k, id := range net.Outputs {
		g := outCot[k]
		if g == nil || !rel[id] {
			continue
		}
		if cot[id] == nil {
			cot[id] = g
		} else {
			for q, v := range g {
				cot[id][q] += v
			}
		}
	}
	for i := len(net.Ops) - 1; i >= 0; i-- {
		op := &net.Ops[i]
		g := cot[op.Out]
		if g == nil {
			continue
		}
		in := op.In[0]
		if rel[in] {
			x := tr.Values[in]
			size := p * x.Len()
			fresh := cot[in] == nil
			if fresh && family(op.Kind) != famAlias {
				cot[in] = *getBuf[float32](size)
			}
			dst := cot[in]
			switch family(op.Kind) {
			case famDense:
				l := op.Layer
				rows, _ := Flat(x)
				beta := float32(1)
				if fresh {
					beta = 0
				}
				gemm32(blas.NoTrans, blas.NoTrans, 1,
					blas32.General{Rows: p * rows, Cols: l.Out, Stride: l.Out, Data: g},
					blas32.General{Rows: l.Out, Cols: l.In, Stride: l.In, Data: w32(l)},
					beta,
					blas32.General{Rows: p * rows, Cols: l.In, Stride: l.In, Data: dst})
			case famAlias:
				if fresh && !wanted[op.Out] {
					cot[in] = g // g dies here: hand it on
					cot[op.Out] = nil
					continue
				}
				if fresh {
					cot[in] = append(*getBuf[float32](0), g...)
				} else {
					for q, v := range g {
						dst[q] += v
					}
				}
			case famDiag:
				if op.Kind == onnxio.OpRelu {
					reluVJP32(dst, g, x.Data, fresh)
					break
				}
				d, err := diagDeriv(op, x, tr.Values[op.Out])
				if err != nil {
					return nil, false
				}
				eachPeriod(len(dst), len(d), func(off, k0, k1 int) {
					o, s, dd := dst[off:off+k1-k0], g[off:off+k1-k0], d[k0:k1]
					if fresh {
						for k, dk := range dd {
							o[k] = float32(dk) * s[k]
						}
					} else {
						for k, dk := range dd {
							o[k] += float32(dk) * s[k]
						}
					}
				})
			}
		}
		if !wanted[op.Out] {
			putBuf(&g)
			cot[op.Out] = nil
		}
	}
	res = make(map[int][]float32, len(want))
	for _, w := range want {
		if cot[w] == nil {
			s := *getBuf[float32](p * tr.Values[w].Len())
			clear(s)
			cot[w] = s
		}
		res[w] = cot[w]
	}
	return res, true
}

// reluVJP32 is the Relu case of vjp32 (derivative 1 where x > 0, else 0,
// as unaryDeriv; a NaN with the sign bit clear counts as positive) without
// branches: on an untrained network the signs of x are random and the
// branchy loop of unaryDeriv cost a fifth of the probe analysis.
func reluVJP32(dst, g []float32, x []float64, fresh bool) {
	eachPeriod(len(dst), len(x), func(off, k0, k1 int) {
		o, s, xs := dst[off:off+k1-k0], g[off:off+k1-k0], x[k0:k1]
		for k, v := range xs {
			b := int64(math.Float64bits(v))
			m := uint32(uint64((-b)&^b)>>63) * 0xffffffff // all ones iff v > 0
			r := math.Float32frombits(math.Float32bits(s[k]) & m)
			if fresh {
				o[k] = r
			} else {
				o[k] += r
			}
		}
	})
}

// eachPeriod runs f over [0, total), a value of n elements repeated over
// the directions, in parallel pieces cut so that each call covers the
// positions off .. off+k1-k0, whose index in the value runs k0 .. k1.
func eachPeriod(total, n int, f func(off, k0, k1 int)) {
	parallelChunks(total, func(lo, hi int) {
		for off := lo; off < hi; {
			k0 := off % n
			k1 := min(n, k0+hi-off)
			f(off, k0, k1)
			off += k1 - k0
		}
	})
}
