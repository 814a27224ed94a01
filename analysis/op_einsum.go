package analysis

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ecprune/ecprune/onnxio"
)

// Einsum: the equation is parsed once per call; operands with a repeated
// label are reduced to their diagonal first, labels only one operand has
// and the output lacks are summed out, and the operands are contracted
// pairwise as batched matrix products (batch labels, the free labels of
// each side, the contracted ones), through the package's GEMM. Einsum is
// linear in each operand, so its JVP is a sum of einsums with one operand
// replaced by its tangent and the VJP of an operand is the einsum of the
// others with the cotangent, broadcast along the labels only it had.

func init() {
	register("Einsum", &Kernel{Check: checkEinsum, Forward: einsumForward, Prepare: einsumPrepare, JVP: einsumJVP, VJP: einsumVJP})
}

// esTerm is an operand's labels as written (a label per axis, the
// ellipsis expanded to labels of its own) and, when a label repeats, the
// diagonal's element positions.
type esTerm struct {
	labels []byte // one per axis of the operand
	uniq   []byte // labels after taking the diagonal
	diag   []int  // positions of the diagonal's elements; nil: none taken
}

type esPlan struct {
	terms []esTerm
	out   []byte
	size  map[byte]int
	shape []int // output shape
}

func checkEinsum(op *onnxio.Op) error {
	if op.AttrString("equation", "") == "" {
		return fmt.Errorf("no equation")
	}
	return nil
}

// parseEinsum parses the equation against the operands' shapes.
func parseEinsum(eq string, in []*Tensor) (*esPlan, error) {
	eq = strings.ReplaceAll(eq, " ", "")
	lhs, rhs, explicit := strings.Cut(eq, "->")
	specs := strings.Split(lhs, ",")
	if len(specs) != len(in) {
		return nil, fmt.Errorf("equation %q has %d operands, the node %d", eq, len(specs), len(in))
	}
	// Ellipsis axes get labels '0'.. from the right, shared by operands
	// (sizes must agree: no broadcasting of ellipsis axes).
	maxEll := 0
	p := &esPlan{size: map[byte]int{}}
	count := map[byte]int{}
	for i, s := range specs {
		t := in[i]
		if t == nil {
			return nil, fmt.Errorf("operand %d: %w", i, errNoInput)
		}
		var labels []byte
		pre, post, ell := strings.Cut(s, "...")
		letters := len(pre) + len(post)
		if !ell {
			letters = len(s)
		}
		ne := t.Rank() - letters
		if (!ell && ne != 0) || ne < 0 {
			return nil, fmt.Errorf("operand %d: %q for rank %d", i, s, t.Rank())
		}
		if !ell {
			labels = []byte(s)
		} else {
			labels = append(labels, pre...)
			for e := ne; e > 0; e-- {
				labels = append(labels, byte('0'+e-1))
			}
			labels = append(labels, post...)
			maxEll = max(maxEll, ne)
		}
		for ax, l := range labels {
			if !(l >= 'a' && l <= 'z' || l >= 'A' && l <= 'Z' || l >= '0' && l <= '9') {
				return nil, fmt.Errorf("equation %q: bad label %q", eq, l)
			}
			if d, ok := p.size[l]; ok && d != t.Shape[ax] {
				return nil, fmt.Errorf("label %c has sizes %d and %d", l, d, t.Shape[ax])
			}
			p.size[l] = t.Shape[ax]
		}
		seen := map[byte]bool{}
		for _, l := range labels {
			if !seen[l] {
				count[l]++
			}
			seen[l] = true
		}
		p.terms = append(p.terms, esTerm{labels: labels})
	}
	if explicit {
		pre, post, ell := strings.Cut(rhs, "...")
		if ell {
			p.out = append(p.out, pre...)
			for e := maxEll; e > 0; e-- {
				p.out = append(p.out, byte('0'+e-1))
			}
			p.out = append(p.out, post...)
		} else {
			p.out = []byte(rhs)
		}
	} else {
		// Implicit output: the ellipsis axes, then every label used once,
		// alphabetically.
		for e := maxEll; e > 0; e-- {
			p.out = append(p.out, byte('0'+e-1))
		}
		var once []byte
		for l, c := range count {
			if c == 1 && !(l >= '0' && l <= '9') && !repeated(p.terms, l) {
				once = append(once, l)
			}
		}
		sort.Slice(once, func(i, j int) bool { return once[i] < once[j] })
		p.out = append(p.out, once...)
	}
	for i, l := range p.out {
		if _, ok := p.size[l]; !ok {
			return nil, fmt.Errorf("output label %c is in no operand", l)
		}
		if slices.Contains(p.out[:i], l) {
			return nil, fmt.Errorf("output label %c repeated", l)
		}
		p.shape = append(p.shape, p.size[l])
	}
	for i := range p.terms {
		p.terms[i].takeDiag(in[i].Shape)
	}
	return p, nil
}

// repeated reports whether a label repeats within one term (the implicit
// form leaves such a label out of the output, as numpy does).
func repeated(terms []esTerm, l byte) bool {
	for _, t := range terms {
		n := 0
		for _, x := range t.labels {
			if x == l {
				n++
			}
		}
		if n > 1 {
			return true
		}
	}
	return false
}

// takeDiag sets the term's unique labels, and for repeated ones the
// positions of the diagonal.
func (t *esTerm) takeDiag(shape []int) {
	st := strides(shape)
	var dshape, dstride []int
	for ax, l := range t.labels {
		if k := slices.Index(t.uniq, l); k >= 0 {
			dstride[k] += st[ax]
			continue
		}
		t.uniq = append(t.uniq, l)
		dshape = append(dshape, shape[ax])
		dstride = append(dstride, st[ax])
	}
	if len(t.uniq) != len(t.labels) {
		t.diag = stridedPos(dshape, 0, dstride)
	}
}

// esVal is an intermediate: data with a label per axis.
type esVal struct {
	labels []byte
	data   []float64
}

func (p *esPlan) shapeOf(labels []byte) []int {
	s := make([]int, len(labels))
	for i, l := range labels {
		s[i] = p.size[l]
	}
	return s
}

// permute returns v's data with its axes in the order of to (v's data
// itself when that is already its order).
func (p *esPlan) permute(v esVal, to []byte) []float64 {
	if slices.Equal(v.labels, to) {
		return v.data
	}
	st := strides(p.shapeOf(v.labels))
	ts := make([]int, len(to))
	for i, l := range to {
		ts[i] = st[slices.Index(v.labels, l)]
	}
	pos := stridedPos(p.shapeOf(to), 0, ts)
	out := make([]float64, len(pos))
	for i, q := range pos {
		out[i] = v.data[q]
	}
	return out
}

// reduce sums v over the labels not in keep.
func (p *esPlan) reduce(v esVal, keep func(byte) bool) esVal {
	var kept, gone []byte
	for _, l := range v.labels {
		if keep(l) {
			kept = append(kept, l)
		} else {
			gone = append(gone, l)
		}
	}
	if len(gone) == 0 {
		return v
	}
	d := p.permute(v, append(slices.Clone(kept), gone...))
	blk := ShapeSize(p.shapeOf(gone))
	out := make([]float64, ShapeSize(p.shapeOf(kept)))
	for i := range out {
		s := 0.0
		for _, x := range d[i*blk : (i+1)*blk] {
			s += x
		}
		out[i] = s
	}
	return esVal{labels: kept, data: out}
}

// contract computes the einsum of vals with output labels out (each label
// of out in some val).
func (p *esPlan) contract(vals []esVal, out []byte) esVal {
	needed := func(skip1, skip2 int, l byte, vals []esVal) bool {
		if slices.Contains(out, l) {
			return true
		}
		for j, v := range vals {
			if j != skip1 && j != skip2 && slices.Contains(v.labels, l) {
				return true
			}
		}
		return false
	}
	vals = slices.Clone(vals)
	for i := range vals {
		vals[i] = p.reduce(vals[i], func(l byte) bool { return needed(i, -1, l, vals) })
	}
	for len(vals) > 1 {
		a, b := vals[0], vals[1]
		keep := func(l byte) bool { return needed(0, 1, l, vals) }
		vals = append([]esVal{p.pair(a, b, keep)}, vals[2:]...)
	}
	v := p.reduce(vals[0], func(l byte) bool { return slices.Contains(out, l) })
	return esVal{labels: out, data: p.permute(v, out)}
}

// pair contracts two values into one with the labels keep wants, as a
// batched product [batch, left, contracted] x [batch, contracted, right].
func (p *esPlan) pair(a, b esVal, keep func(byte) bool) esVal {
	var batch, left, con, right []byte
	for _, l := range a.labels {
		inB := slices.Contains(b.labels, l)
		switch {
		case inB && keep(l):
			batch = append(batch, l)
		case inB:
			con = append(con, l)
		case keep(l):
			left = append(left, l)
		}
	}
	for _, l := range b.labels {
		if !slices.Contains(a.labels, l) && keep(l) {
			right = append(right, l)
		}
	}
	// Labels of one side that neither the other nor the rest needs.
	a = p.reduce(a, func(l byte) bool { return slices.Contains(b.labels, l) || keep(l) })
	b = p.reduce(b, func(l byte) bool { return slices.Contains(a.labels, l) || keep(l) })
	cat := func(xs ...[]byte) []byte {
		var r []byte
		for _, x := range xs {
			r = append(r, x...)
		}
		return r
	}
	// Prefer a layout the operand already has (a transposed product reads
	// it in place) over a copy.
	ta := slices.Equal(a.labels, cat(batch, con, left))
	ad := a.data
	if !ta {
		ad = p.permute(a, cat(batch, left, con))
	}
	tb := slices.Equal(b.labels, cat(batch, right, con))
	bd := b.data
	if !tb {
		bd = p.permute(b, cat(batch, con, right))
	}
	nb := ShapeSize(p.shapeOf(batch))
	m, k, n := ShapeSize(p.shapeOf(left)), ShapeSize(p.shapeOf(con)), ShapeSize(p.shapeOf(right))
	res := make([]float64, nb*m*n)
	offA, offB, offC := make([]int, nb), make([]int, nb), make([]int, nb)
	for s := range nb {
		offA[s], offB[s], offC[s] = s*m*k, s*k*n, s*m*n
	}
	bmm(ta, tb, m, n, k, ad, offA, bd, offB, res, offC, 0, true)
	return esVal{labels: cat(batch, left, right), data: res}
}

// operand is input i as a value (its diagonal when a label repeats).
func (p *esPlan) operand(i int, t *Tensor) esVal {
	tm := &p.terms[i]
	if tm.diag == nil {
		return esVal{labels: tm.uniq, data: t.Data}
	}
	d := make([]float64, len(tm.diag))
	for k, q := range tm.diag {
		d[k] = t.Data[q]
	}
	return esVal{labels: tm.uniq, data: d}
}

func (p *esPlan) eval(in []*Tensor) *Tensor {
	vals := make([]esVal, len(in))
	for i, t := range in {
		vals[i] = p.operand(i, t)
	}
	return NewTensor(p.shape, p.contract(vals, p.out).data)
}

func einsumPlan(op *onnxio.Op, in []*Tensor) (*esPlan, error) {
	return parseEinsum(op.AttrString("equation", ""), in)
}

func einsumForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	p, err := einsumPlan(op, in)
	if err != nil {
		return nil, err
	}
	return p.eval(in), nil
}

func einsumPrepare(op *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) { return einsumPlan(op, in) }

func einsumJVP(_ *onnxio.Op, in []*Tensor, out *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	p := st.(*esPlan)
	var t *Tensor
	ins := slices.Clone(in)
	for i, d := range tin {
		if d == nil {
			continue
		}
		ins[i] = d
		r := p.eval(ins)
		ins[i] = in[i]
		if t == nil {
			t = r
		} else {
			addTo(t.Data, r.Data)
		}
	}
	if t == nil {
		return nil, nil
	}
	t.Shape = out.Shape
	return t, nil
}

func einsumVJP(_ *onnxio.Op, in []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
	p := st.(*esPlan)
	for i := range in {
		if gin[i] == nil {
			continue
		}
		tm := &p.terms[i]
		vals := []esVal{{labels: p.out, data: g.Data}}
		for j, t := range in {
			if j != i {
				vals = append(vals, p.operand(j, t))
			}
		}
		// The labels the others or the output have; the derivative is
		// constant along the rest, which were summed.
		var avail []byte
		for _, l := range tm.uniq {
			for _, v := range vals {
				if slices.Contains(v.labels, l) {
					avail = append(avail, l)
					break
				}
			}
		}
		r := p.contract(vals, avail)
		rs := strides(p.shapeOf(avail))
		st := make([]int, len(tm.uniq))
		for ax, l := range tm.uniq {
			if k := slices.Index(avail, l); k >= 0 {
				st[ax] = rs[k]
			}
		}
		src := stridedPos(p.shapeOf(tm.uniq), 0, st)
		dst := gin[i].Data
		for k, q := range src {
			if tm.diag != nil {
				dst[tm.diag[k]] += r.data[q]
			} else {
				dst[k] += r.data[q]
			}
		}
	}
	return nil
}
