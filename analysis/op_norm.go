package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Normalisations: LayerNormalization (opset 17; outputs Y, Mean and
// InvStdDev), InstanceNormalization, GroupNormalization and
// LpNormalization. The first three share one core: the input seen as
// [rows, d], every row normalised to zero mean and unit variance, then
// scaled and shifted per element by coefficients that depend on the op.
// Derivatives are exact wrt X, Scale and B.

func init() {
	for _, t := range []string{"LayerNormalization", "InstanceNormalization", "GroupNormalization"} {
		register(t, &Kernel{Check: normCheck, Forward: normForward, Prepare: normPrepare, JVP: normJVP, VJP: normVJP})
	}
	register("LpNormalization", &Kernel{Check: lpCheck, Forward: lpForward, Prepare: lpPrepare, JVP: lpJVP, VJP: lpVJP})
}

// normGeom lays out a normalisation: rows of d elements; element j of row
// r is scaled by Scale[(r%sMod)*sRow + jmS[j]] and shifted by
// B[(r%sMod)*sRow + jmB[j]] (nil maps: the identity).
type normGeom struct {
	rows, d    int
	sMod, sRow int
	jmS, jmB   []int
	eps        float64
	statsShape []int // LayerNormalization's Mean and InvStdDev
}

func normCheck(op *onnxio.Op) error {
	if op.Type == "GroupNormalization" && op.AttrInt("num_groups", 0) <= 0 {
		return fmt.Errorf("num_groups is missing or not positive")
	}
	if op.OutIndex > 0 && op.Type != "LayerNormalization" || op.OutIndex > 2 {
		return fmt.Errorf("output %d is not supported", op.OutIndex)
	}
	return nil
}

func normGeomOf(op *onnxio.Op, in []*Tensor) (*normGeom, error) {
	x, s, err := need2(in)
	if err != nil {
		return nil, err
	}
	var b *Tensor
	if len(in) > 2 {
		b = in[2]
	}
	if b == nil && op.Type != "LayerNormalization" {
		return nil, fmt.Errorf("input 2: %w", errNoInput)
	}
	g := &normGeom{sMod: 1, eps: op.AttrFloat("epsilon", 1e-5)}
	r := x.Rank()
	switch op.Type {
	case "LayerNormalization":
		ax, err := normAxis(int(op.AttrInt("axis", -1)), r)
		if err != nil {
			return nil, err
		}
		norm := x.Shape[ax:]
		g.rows, g.d = ShapeSize(x.Shape[:ax]), ShapeSize(norm)
		for k, t := range []*Tensor{s, b} {
			if t == nil {
				continue
			}
			if bs, err := BroadcastShape(norm, t.Shape); err != nil || !SameShape(bs, norm) {
				return nil, fmt.Errorf("input %d of shape %s does not broadcast to the normalised shape %s", k+1, plain.Shape(t.Shape), plain.Shape(norm))
			}
			m := bcastIndex(norm, t.Shape)
			if k == 0 {
				g.jmS = m
			} else {
				g.jmB = m
			}
		}
		g.statsShape = append([]int(nil), x.Shape...)
		for a := ax; a < r; a++ {
			g.statsShape[a] = 1
		}
	case "InstanceNormalization", "GroupNormalization":
		if r < 2 {
			return nil, fmt.Errorf("input of rank %d, want [N, C, ...]", r)
		}
		n, c, spatial := x.Shape[0], x.Shape[1], ShapeSize(x.Shape[2:])
		groups := c
		if op.Type == "GroupNormalization" {
			groups = int(op.AttrInt("num_groups", 0))
			if groups <= 0 || c%groups != 0 {
				return nil, fmt.Errorf("%d channels do not split into %d groups", c, groups)
			}
		}
		g.rows, g.d, g.sMod = n*groups, c/groups*spatial, groups
		per := c / groups
		for k, t := range []*Tensor{s, b} {
			var m []int
			switch t.Len() {
			case c: // per channel (InstanceNormalization; GroupNormalization from opset 21)
				g.sRow = per
				m = make([]int, g.d)
				for j := range m {
					m[j] = j / spatial
				}
			case groups: // per group (GroupNormalization opset 18)
				g.sRow = 1
				m = make([]int, g.d)
			default:
				return nil, fmt.Errorf("input %d has %d values for %d channels in %d groups", k+1, t.Len(), c, groups)
			}
			if k == 0 {
				g.jmS = m
			} else {
				g.jmB = m
			}
		}
		if b != nil && s.Len() != b.Len() {
			return nil, fmt.Errorf("scale has %d values, bias %d", s.Len(), b.Len())
		}
	}
	return g, nil
}

// stats computes each row's mean and 1/sqrt(var + eps), and xhat when it
// is not nil.
func (g *normGeom) stats(x []float64, mean, inv, xhat []float64) {
	fd := float64(g.d)
	for r := 0; r < g.rows; r++ {
		row := x[r*g.d : (r+1)*g.d]
		m := 0.0
		for _, v := range row {
			m += v
		}
		m /= fd
		vr := 0.0
		for _, v := range row {
			vr += (v - m) * (v - m)
		}
		iv := 1 / math.Sqrt(vr/fd+g.eps)
		mean[r], inv[r] = m, iv
		if xhat != nil {
			h := xhat[r*g.d : (r+1)*g.d]
			for j, v := range row {
				h[j] = (v - m) * iv
			}
		}
	}
}

func normForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	g, err := normGeomOf(op, in)
	if err != nil {
		return nil, err
	}
	x := in[0]
	mean, inv := make([]float64, g.rows), make([]float64, g.rows)
	switch op.OutIndex {
	case 1:
		g.stats(x.Data, mean, inv, nil)
		return NewTensor(g.statsShape, mean), nil
	case 2:
		g.stats(x.Data, mean, inv, nil)
		return NewTensor(g.statsShape, inv), nil
	}
	y := NewTensor(x.Shape, nil)
	g.stats(x.Data, mean, inv, y.Data)
	var b *Tensor
	if len(in) > 2 {
		b = in[2]
	}
	g.affine(y.Data, y.Data, in[1].Data, b)
	return y, nil
}

// affine sets y = xhat * Scale + B elementwise (y may be xhat).
func (g *normGeom) affine(y, xhat, s []float64, b *Tensor) {
	for r := 0; r < g.rows; r++ {
		off := (r % g.sMod) * g.sRow
		yr, hr := y[r*g.d:(r+1)*g.d], xhat[r*g.d:(r+1)*g.d]
		for j, h := range hr {
			v := h * s[off+bcAt(g.jmS, j)]
			if b != nil {
				v += b.Data[off+bcAt(g.jmB, j)]
			}
			yr[j] = v
		}
	}
}

// normState is a normalisation's linearisation point.
type normState struct {
	*normGeom
	inv, xhat []float64
}

func normPrepare(op *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	g, err := normGeomOf(op, in)
	if err != nil {
		return nil, err
	}
	st := &normState{normGeom: g, inv: make([]float64, g.rows), xhat: make([]float64, in[0].Len())}
	g.stats(in[0].Data, make([]float64, g.rows), st.inv, st.xhat)
	return st, nil
}

func normJVP(op *onnxio.Op, in []*Tensor, y *Tensor, s any, tin []*Tensor) (*Tensor, error) {
	st := s.(*normState)
	out := NewTensor(y.Shape, nil)
	d, fd := st.d, float64(st.d)
	if t := tin[0]; t != nil {
		for r := 0; r < st.rows; r++ {
			tr, hr := t.Data[r*d:(r+1)*d], st.xhat[r*d:(r+1)*d]
			mt, mht := 0.0, 0.0
			for j, v := range tr {
				mt += v
				mht += hr[j] * v
			}
			mt, mht = mt/fd, mht/fd
			iv := st.inv[r]
			switch op.OutIndex {
			case 1: // Mean
				out.Data[r] = mt
				continue
			case 2: // InvStdDev
				out.Data[r] = -iv * iv * mht
				continue
			}
			off := (r % st.sMod) * st.sRow
			sc, or := in[1].Data, out.Data[r*d:(r+1)*d]
			for j, v := range tr {
				or[j] = sc[off+bcAt(st.jmS, j)] * iv * (v - mt - hr[j]*mht)
			}
		}
	}
	if op.OutIndex != 0 {
		return out, nil
	}
	for k, jm := range [][]int{st.jmS, st.jmB} {
		if k+1 >= len(tin) || tin[k+1] == nil {
			continue
		}
		t := tin[k+1]
		for r := 0; r < st.rows; r++ {
			off := (r % st.sMod) * st.sRow
			or, hr := out.Data[r*d:(r+1)*d], st.xhat[r*d:(r+1)*d]
			for j := range or {
				v := t.Data[off+bcAt(jm, j)]
				if k == 0 {
					v *= hr[j]
				}
				or[j] += v
			}
		}
	}
	return out, nil
}

func normVJP(op *onnxio.Op, in []*Tensor, _ *Tensor, s any, g *Tensor, gin []*Tensor) error {
	st := s.(*normState)
	d, fd := st.d, float64(st.d)
	if gx := gin[0]; gx != nil {
		gs := make([]float64, d)
		for r := 0; r < st.rows; r++ {
			hr, dst := st.xhat[r*d:(r+1)*d], gx.Data[r*d:(r+1)*d]
			iv := st.inv[r]
			switch op.OutIndex {
			case 1:
				v := g.Data[r] / fd
				for j := range dst {
					dst[j] += v
				}
				continue
			case 2:
				v := -iv * iv * g.Data[r] / fd
				for j, h := range hr {
					dst[j] += v * h
				}
				continue
			}
			off := (r % st.sMod) * st.sRow
			gr, sc := g.Data[r*d:(r+1)*d], in[1].Data
			m, mh := 0.0, 0.0
			for j, v := range gr {
				v *= sc[off+bcAt(st.jmS, j)]
				gs[j] = v
				m += v
				mh += v * hr[j]
			}
			m, mh = m/fd, mh/fd
			for j, v := range gs {
				dst[j] += iv * (v - m - hr[j]*mh)
			}
		}
	}
	if op.OutIndex != 0 {
		return nil
	}
	for k, jm := range [][]int{st.jmS, st.jmB} {
		if k+1 >= len(gin) || gin[k+1] == nil {
			continue
		}
		dst := gin[k+1].Data
		for r := 0; r < st.rows; r++ {
			off := (r % st.sMod) * st.sRow
			gr, hr := g.Data[r*d:(r+1)*d], st.xhat[r*d:(r+1)*d]
			for j, v := range gr {
				if k == 0 {
					v *= hr[j]
				}
				dst[off+bcAt(jm, j)] += v
			}
		}
	}
	return nil
}

// ---- LpNormalization ----

func lpCheck(op *onnxio.Op) error {
	if p := op.AttrInt("p", 2); p != 1 && p != 2 {
		return fmt.Errorf("p = %d (ONNX allows 1 and 2)", p)
	}
	return nil
}

// lpGeom is LpNormalization's layout: [outer, d, inner] normalised over d.
func lpGeom(op *onnxio.Op, x *Tensor) (outer, d, inner int, err error) {
	ax, err := normAxis(int(op.AttrInt("axis", -1)), x.Rank())
	if err != nil {
		return 0, 0, 0, err
	}
	return ShapeSize(x.Shape[:ax]), x.Shape[ax], ShapeSize(x.Shape[ax+1:]), nil
}

// lpState holds the norm of every vector and the weights w with
// dnorm = sum w dx (y for p = 2, sign(x) for p = 1).
type lpState struct {
	outer, d, inner int
	norm, w         []float64
}

func lpNorms(op *onnxio.Op, x *Tensor) (*lpState, error) {
	if err := lpCheck(op); err != nil {
		return nil, err
	}
	outer, d, inner, err := lpGeom(op, x)
	if err != nil {
		return nil, err
	}
	st := &lpState{outer: outer, d: d, inner: inner, norm: make([]float64, outer*inner)}
	p := op.AttrInt("p", 2)
	for o := 0; o < outer; o++ {
		for i := 0; i < inner; i++ {
			s := 0.0
			for j := 0; j < d; j++ {
				v := x.Data[(o*d+j)*inner+i]
				if p == 1 {
					s += math.Abs(v)
				} else {
					s += v * v
				}
			}
			if p == 2 {
				s = math.Sqrt(s)
			}
			st.norm[o*inner+i] = s
		}
	}
	return st, nil
}

// at is the element index of component j of vector v.
func (st *lpState) at(v, j int) int { return (v/st.inner*st.d+j)*st.inner + v%st.inner }

func lpForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	st, err := lpNorms(op, x)
	if err != nil {
		return nil, err
	}
	y := NewTensor(x.Shape, nil)
	for v, n := range st.norm {
		if n == 0 {
			continue // the zero vector stays zero
		}
		for j := 0; j < st.d; j++ {
			k := st.at(v, j)
			y.Data[k] = x.Data[k] / n
		}
	}
	return y, nil
}

func lpPrepare(op *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
	st, err := lpNorms(op, in[0])
	if err != nil {
		return nil, err
	}
	if op.AttrInt("p", 2) == 2 {
		st.w = y.Data
	} else {
		st.w = make([]float64, len(y.Data))
		for k, v := range in[0].Data {
			st.w[k] = signOf(v)
		}
	}
	return st, nil
}

// lpJVP: dy = (dx - y <w, dx>) / norm.
func lpJVP(_ *onnxio.Op, _ []*Tensor, y *Tensor, s any, tin []*Tensor) (*Tensor, error) {
	st, t := s.(*lpState), tin[0]
	if t == nil {
		return nil, nil
	}
	out := NewTensor(y.Shape, nil)
	for v, n := range st.norm {
		if n == 0 {
			continue
		}
		dn := 0.0
		for j := 0; j < st.d; j++ {
			k := st.at(v, j)
			dn += st.w[k] * t.Data[k]
		}
		for j := 0; j < st.d; j++ {
			k := st.at(v, j)
			out.Data[k] = (t.Data[k] - y.Data[k]*dn) / n
		}
	}
	return out, nil
}

// lpVJP: dx = (g - w <y, g>) / norm.
func lpVJP(_ *onnxio.Op, _ []*Tensor, y *Tensor, s any, g *Tensor, gin []*Tensor) error {
	st, dst := s.(*lpState), gin[0]
	if dst == nil {
		return nil
	}
	for v, n := range st.norm {
		if n == 0 {
			continue
		}
		gy := 0.0
		for j := 0; j < st.d; j++ {
			k := st.at(v, j)
			gy += y.Data[k] * g.Data[k]
		}
		for j := 0; j < st.d; j++ {
			k := st.at(v, j)
			dst.Data[k] += (g.Data[k] - st.w[k]*gy) / n
		}
	}
	return nil
}
