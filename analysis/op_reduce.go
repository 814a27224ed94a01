package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
// ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp over
// a set of axes, with keepdims and noop_with_empty_axes. Axes come from
// input 1 when present (ReduceSum from opset 13, every reduction from 18)
// and from the axes attribute otherwise.

func init() {
	for _, t := range []string{"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
		"ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"} {
		register(t, &Kernel{Forward: reduceForward, Prepare: reducePrepare, JVP: reduceJVP, VJP: reduceVJP, ConcurrentVJP: true})
	}
}

// reduceGeom maps the input's elements to the output's. When the reduced
// axes (ignoring those of size 1) are contiguous, the input is [outer,
// red, inner] and the output [outer, inner]; otherwise idx gives each
// input element's output element.
type reduceGeom struct {
	shape             []int // output shape
	noop              bool  // empty axes with noop_with_empty_axes: the identity
	outer, red, inner int
	idx               []int
	n                 int // input elements per output element
}

func reduceGeomOf(op *onnxio.Op, in []*Tensor) (*reduceGeom, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	var axes []int
	if len(in) > 1 && in[1] != nil {
		axes = intsOf(in[1])
	} else {
		for _, a := range op.AttrInts("axes") {
			axes = append(axes, int(a))
		}
	}
	r := x.Rank()
	g := &reduceGeom{}
	if len(axes) == 0 {
		if op.AttrInt("noop_with_empty_axes", 0) != 0 {
			g.noop, g.shape, g.n = true, x.Shape, 1
			return g, nil
		}
		for a := range r {
			axes = append(axes, a)
		}
	}
	red := make([]bool, r)
	for _, a := range axes {
		b, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		if red[b] {
			return nil, fmt.Errorf("axis %d repeated in %s", a, plain.List(axes))
		}
		red[b] = true
	}
	keep := op.AttrInt("keepdims", 1) != 0
	kept := make([]int, r) // the output shape with keepdims
	g.n = 1
	first, last := -1, -1 // the reduced axes of size > 1
	for a, d := range x.Shape {
		kept[a] = d
		if !red[a] {
			g.shape = append(g.shape, d)
			continue
		}
		kept[a] = 1
		if keep {
			g.shape = append(g.shape, 1)
		}
		g.n *= d
		if d != 1 {
			if first < 0 {
				first = a
			}
			last = a
		}
	}
	if g.shape == nil {
		g.shape = []int{}
	}
	contiguous := true
	for a := first + 1; first >= 0 && a < last; a++ {
		if !red[a] && x.Shape[a] != 1 {
			contiguous = false
		}
	}
	if !contiguous {
		g.idx = bcastIndex(x.Shape, kept)
		return g, nil
	}
	if first < 0 {
		g.outer, g.red, g.inner = x.Len(), 1, 1
		return g, nil
	}
	g.outer, g.red, g.inner = ShapeSize(x.Shape[:first]), ShapeSize(x.Shape[first:last+1]), ShapeSize(x.Shape[last+1:])
	return g, nil
}

// each calls f for every input element k with its output element o, in
// input order within each output element.
func (g *reduceGeom) each(f func(k, o int)) {
	if g.idx != nil {
		for k, o := range g.idx {
			f(k, o)
		}
		return
	}
	k := 0
	for a := 0; a < g.outer; a++ {
		for r := 0; r < g.red; r++ {
			o := a * g.inner
			for i := 0; i < g.inner; i++ {
				f(k, o+i)
				k++
			}
		}
	}
}

func reduceForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	g, err := reduceGeomOf(op, in)
	if err != nil {
		return nil, err
	}
	x := in[0]
	if g.noop {
		return x.Clone(), nil
	}
	y := NewTensor(g.shape, nil)
	yd, xd := y.Data, x.Data
	switch op.Type {
	case "ReduceSum", "ReduceMean", "ReduceLogSum":
		if g.idx == nil && g.inner == 1 {
			for a := range yd {
				s := 0.0
				for _, v := range xd[a*g.red : (a+1)*g.red] {
					s += v
				}
				yd[a] = s
			}
		} else {
			g.each(func(k, o int) { yd[o] += xd[k] })
		}
	case "ReduceSumSquare", "ReduceL2":
		g.each(func(k, o int) { yd[o] += xd[k] * xd[k] })
	case "ReduceL1":
		g.each(func(k, o int) { yd[o] += math.Abs(xd[k]) })
	case "ReduceProd":
		for o := range yd {
			yd[o] = 1
		}
		g.each(func(k, o int) { yd[o] *= xd[k] })
	case "ReduceMax", "ReduceMin", "ReduceLogSumExp":
		sign := 1.0
		if op.Type == "ReduceMin" {
			sign = -1
		}
		for o := range yd {
			yd[o] = math.Inf(-1)
		}
		g.each(func(k, o int) {
			if v := sign * xd[k]; v > yd[o] || math.IsNaN(v) {
				yd[o] = v
			}
		})
		if op.Type == "ReduceLogSumExp" {
			m := append([]float64(nil), yd...)
			for o, v := range m {
				if math.IsInf(v, 0) {
					m[o] = 0 // keeps exp(x-m) defined for all -Inf or +Inf
				}
			}
			clear(yd)
			g.each(func(k, o int) { yd[o] += math.Exp(xd[k] - m[o]) })
			for o := range yd {
				yd[o] = m[o] + math.Log(yd[o])
			}
		}
		for o := range yd {
			yd[o] *= sign
		}
	default:
		return nil, fmt.Errorf("unknown reduction %s", op.Type)
	}
	switch op.Type {
	case "ReduceMean":
		s := 1 / float64(g.n)
		for o := range yd {
			yd[o] *= s
			if !isFloatType(op.OutType) {
				yd[o] = math.Trunc(yd[o])
			}
		}
	case "ReduceL2":
		for o, v := range yd {
			yd[o] = math.Sqrt(v)
		}
	case "ReduceLogSum":
		for o, v := range yd {
			yd[o] = math.Log(v)
		}
	}
	return y, nil
}

// reduceState is a reduction's linearisation: the derivative coef[k] of
// the output element of input element k wrt it, or the constant scale
// when it is the same everywhere (Sum, Mean).
type reduceState struct {
	*reduceGeom
	coef  []float64
	scale float64
}

func reducePrepare(op *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
	g, err := reduceGeomOf(op, in)
	if err != nil {
		return nil, err
	}
	st := &reduceState{reduceGeom: g, scale: 1}
	if g.noop {
		return st, nil
	}
	x, yd := in[0].Data, y.Data
	switch op.Type {
	case "ReduceSum":
		return st, nil
	case "ReduceMean":
		st.scale = 1 / float64(g.n)
		return st, nil
	}
	c := make([]float64, len(x))
	st.coef = c
	switch op.Type {
	case "ReduceSumSquare":
		for k, v := range x {
			c[k] = 2 * v
		}
	case "ReduceL1":
		for k, v := range x {
			c[k] = signOf(v)
		}
	case "ReduceL2":
		g.each(func(k, o int) {
			if yd[o] != 0 { // the zero vector: take the zero subgradient
				c[k] = x[k] / yd[o]
			}
		})
	case "ReduceLogSum":
		g.each(func(k, o int) { c[k] = math.Exp(-yd[o]) })
	case "ReduceLogSumExp":
		g.each(func(k, o int) { c[k] = math.Exp(x[k] - yd[o]) })
	case "ReduceMax", "ReduceMin":
		// The first extreme element carries the derivative.
		done := make([]bool, len(yd))
		g.each(func(k, o int) {
			if !done[o] && (x[k] == yd[o] || math.IsNaN(yd[o])) {
				c[k], done[o] = 1, true
			}
		})
	case "ReduceProd":
		// The product of the others, exact with zeros among them.
		zeros := make([]int, len(yd))
		nz := make([]float64, len(yd))
		for o := range nz {
			nz[o] = 1
		}
		g.each(func(k, o int) {
			if x[k] == 0 {
				zeros[o]++
			} else {
				nz[o] *= x[k]
			}
		})
		g.each(func(k, o int) {
			switch {
			case x[k] == 0 && zeros[o] == 1:
				c[k] = nz[o]
			case x[k] != 0 && zeros[o] == 0:
				c[k] = nz[o] / x[k]
			}
		})
	}
	return st, nil
}

func reduceJVP(_ *onnxio.Op, _ []*Tensor, y *Tensor, s any, tin []*Tensor) (*Tensor, error) {
	st := s.(*reduceState)
	t := tin[0]
	if t == nil {
		return nil, nil
	}
	if st.noop {
		return t.Clone(), nil
	}
	out := NewTensor(y.Shape, nil)
	od, td := out.Data, t.Data
	if st.coef != nil {
		c := st.coef
		st.each(func(k, o int) { od[o] += c[k] * td[k] })
		return out, nil
	}
	if st.idx == nil && st.inner == 1 {
		for a := range od {
			v := 0.0
			for _, x := range td[a*st.red : (a+1)*st.red] {
				v += x
			}
			od[a] = v * st.scale
		}
		return out, nil
	}
	st.each(func(k, o int) { od[o] += td[k] })
	if st.scale != 1 {
		for o := range od {
			od[o] *= st.scale
		}
	}
	return out, nil
}

func reduceVJP(_ *onnxio.Op, _ []*Tensor, _ *Tensor, s any, g *Tensor, gin []*Tensor) error {
	st := s.(*reduceState)
	if gin[0] == nil {
		return nil
	}
	dst, gd := gin[0].Data, g.Data
	switch {
	case st.noop:
		for k, v := range gd {
			dst[k] += v
		}
	case st.coef != nil:
		c := st.coef
		st.each(func(k, o int) { dst[k] += c[k] * gd[o] })
	case st.idx == nil && st.inner == 1:
		for a, v := range gd {
			v *= st.scale
			row := dst[a*st.red : (a+1)*st.red]
			for r := range row {
				row[r] += v
			}
		}
	default:
		sc := st.scale
		st.each(func(k, o int) { dst[k] += sc * gd[o] })
	}
	return nil
}
