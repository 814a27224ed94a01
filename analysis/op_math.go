package analysis

import (
	"fmt"
	"math"
	"sync"

	"github.com/ecprune/ecprune/onnxio"
)

// Elementwise math: unary functions (Sqrt, Exp, Log, Abs, ..., the
// activations without an op kind of their own; Neg is registered with the
// integer arithmetic of op_shape.go), Pow with broadcasting, Clip, and the
// variadic broadcasting Min, Max, Sum, Mean.

func init() {
	for name, u := range unaryOps {
		register(name, elementwiseKernel(u))
	}
	register("Pow", &Kernel{ForwardAlloc: powForward, Prepare: powPrepare, JVP: powJVP, VJP: powVJP, ConcurrentVJP: true})
	register("PRelu", &Kernel{Forward: preluForward, Prepare: pairPrepare, JVP: preluJVP, VJP: preluVJP})
	register("Clip", &Kernel{Forward: clipForward, Prepare: clipPrepare, JVP: clipJVP, VJP: clipVJP})
	for _, name := range []string{"Sum", "Mean", "Max", "Min"} {
		register(name, &Kernel{Forward: variadicForward, Prepare: variadicPrepare, JVP: variadicJVP, VJP: variadicVJP})
	}
}

// unaryOp is an elementwise function of one input: fn builds, from the
// op's attributes, f and its derivative d (given x and y = f(x)); a nil d
// is a zero derivative (piecewise constant functions). slow marks
// transcendental functions worth two goroutines on large inputs.
type unaryOp struct {
	fn   func(op *onnxio.Op) (f func(x float64) float64, d func(x, y float64) float64)
	slow bool
}

func unaryPlain(f func(float64) float64, d func(x, y float64) float64, slow bool) unaryOp {
	return unaryOp{fn: func(*onnxio.Op) (func(float64) float64, func(x, y float64) float64) { return f, d }, slow: slow}
}

var unaryOps = map[string]unaryOp{
	"Sqrt":       unaryPlain(math.Sqrt, func(_, y float64) float64 { return 0.5 / y }, false),
	"Exp":        unaryPlain(math.Exp, func(_, y float64) float64 { return y }, true),
	"Log":        unaryPlain(math.Log, func(x, _ float64) float64 { return 1 / x }, true),
	"Abs":        unaryPlain(math.Abs, func(x, _ float64) float64 { return signOf(x) }, false), // 0 at 0, as torch
	"Reciprocal": unaryPlain(func(x float64) float64 { return 1 / x }, func(_, y float64) float64 { return -y * y }, false),
	"Sin":        unaryPlain(math.Sin, func(x, _ float64) float64 { return math.Cos(x) }, true),
	"Cos":        unaryPlain(math.Cos, func(x, _ float64) float64 { return -math.Sin(x) }, true),
	"Tan":        unaryPlain(math.Tan, func(_, y float64) float64 { return 1 + y*y }, true),
	"Sinh":       unaryPlain(math.Sinh, func(x, _ float64) float64 { return math.Cosh(x) }, true),
	"Cosh":       unaryPlain(math.Cosh, func(x, _ float64) float64 { return math.Sinh(x) }, true),
	"Atan":       unaryPlain(math.Atan, func(x, _ float64) float64 { return 1 / (1 + x*x) }, true),
	"Asin":       unaryPlain(math.Asin, func(x, _ float64) float64 { return 1 / math.Sqrt(1-x*x) }, true),
	"Acos":       unaryPlain(math.Acos, func(x, _ float64) float64 { return -1 / math.Sqrt(1-x*x) }, true),
	"Asinh":      unaryPlain(math.Asinh, func(x, _ float64) float64 { return 1 / math.Sqrt(x*x+1) }, true),
	"Acosh":      unaryPlain(math.Acosh, func(x, _ float64) float64 { return 1 / math.Sqrt(x*x-1) }, true),
	"Atanh":      unaryPlain(math.Atanh, func(x, _ float64) float64 { return 1 / (1 - x*x) }, true),
	"Floor":      unaryPlain(math.Floor, nil, false),
	"Ceil":       unaryPlain(math.Ceil, nil, false),
	"Round":      unaryPlain(math.RoundToEven, nil, false), // ONNX rounds halves to even
	"Sign":       unaryPlain(signOf, nil, false),
	"Softsign": unaryPlain(func(x float64) float64 { return x / (1 + math.Abs(x)) },
		func(x, _ float64) float64 { s := 1 + math.Abs(x); return 1 / (s * s) }, false),
	// Mish: x * tanh(softplus(x)).
	"Mish": unaryPlain(func(x float64) float64 { return x * math.Tanh(softplusF(x)) },
		func(x, _ float64) float64 {
			t := math.Tanh(softplusF(x))
			return t + x*(1-t*t)*sigmoid(x)
		}, true),
	"Celu": {fn: func(op *onnxio.Op) (func(float64) float64, func(x, y float64) float64) {
		a := op.AttrFloat("alpha", 1)
		return func(x float64) float64 {
				if x > 0 {
					return x
				}
				return a * math.Expm1(x/a)
			}, func(x, _ float64) float64 {
				if x > 0 {
					return 1
				}
				return math.Exp(x / a)
			}
	}, slow: true},
	"ThresholdedRelu": {fn: func(op *onnxio.Op) (func(float64) float64, func(x, y float64) float64) {
		a := op.AttrFloat("alpha", 1)
		return func(x float64) float64 {
				if x > a {
					return x
				}
				return 0
			}, func(x, _ float64) float64 {
				if x > a {
					return 1
				}
				return 0
			}
	}},
	// Swish (opset 24): x * sigmoid(alpha x).
	"Swish": {fn: func(op *onnxio.Op) (func(float64) float64, func(x, y float64) float64) {
		a := op.AttrFloat("alpha", 1)
		return func(x float64) float64 { return x * sigmoid(a*x) }, func(x, _ float64) float64 {
			s := sigmoid(a * x)
			return s + a*x*s*(1-s)
		}
	}, slow: true},
}

// signOf is -1, 0 or 1 (NaN stays NaN).
func signOf(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return x
}

// softplusF is log(1 + exp(x)) without overflow.
func softplusF(x float64) float64 { return math.Log1p(math.Exp(-math.Abs(x))) + max(x, 0) }

// elementwiseKernel makes the kernel of a unary function; Prepare keeps
// the derivative at every element for all the directions.
func elementwiseKernel(u unaryOp) *Kernel {
	least := 1 << 16
	if u.slow {
		least = 1 << 12
	}
	k := &Kernel{
		Forward: func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
			x, err := need(in, 0)
			if err != nil {
				return nil, err
			}
			f, _ := u.fn(op)
			y := NewTensor(x.Shape, nil)
			parallelAbove(len(x.Data), least, func(lo, hi int) {
				xs, ys := x.Data[lo:hi], y.Data[lo:hi]
				for i, v := range xs {
					ys[i] = f(v)
				}
			})
			return y, nil
		},
		Prepare: func(op *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
			_, d := u.fn(op)
			if d == nil {
				return nil, nil
			}
			x := in[0]
			dd := make([]float64, len(x.Data))
			parallelAbove(len(dd), least, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					dd[i] = d(x.Data[i], y.Data[i])
				}
			})
			return dd, nil
		},
		JVP: func(_ *onnxio.Op, _ []*Tensor, y *Tensor, st any, tin []*Tensor) (*Tensor, error) {
			if st == nil || tin[0] == nil {
				return nil, nil
			}
			dd := st.([]float64)
			out := NewTensor(y.Shape, nil)
			for i, t := range tin[0].Data {
				out.Data[i] = dd[i] * t
			}
			return out, nil
		},
		VJP: func(_ *onnxio.Op, _ []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
			if st == nil || gin[0] == nil {
				return nil
			}
			dd, dst := st.([]float64), gin[0].Data
			for i, v := range g.Data {
				dst[i] += dd[i] * v
			}
			return nil
		},
	}
	return k
}

// ---- Pow ----

// powOf is x^e with the exponents that the exporters emit taken without
// math.Pow (Pow(x, 2) of decomposed LayerNorm runs on every activation).
func powOf(x, e float64) float64 {
	switch e {
	case 2:
		return x * x
	case 1:
		return x
	case 0.5:
		return math.Sqrt(x)
	case 3:
		return x * x * x
	}
	return math.Pow(x, e)
}

// binaryGeom is the broadcast of two operands: the output shape and each
// operand's broadcast map (nil: identity).
type binaryGeom struct {
	shape  []int
	ia, ib []int
}

func broadcastPair(a, b *Tensor) (*binaryGeom, error) {
	s, err := BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	return &binaryGeom{shape: s, ia: bcastIndex(s, a.Shape), ib: bcastIndex(s, b.Shape)}, nil
}

func powForward(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
	a, b, err := need2(in)
	if err != nil {
		return nil, err
	}
	shape, err := BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	y := alloc(shape)
	w := bcastWalk(shape, a.Shape, b.Shape)
	sa, sb := w.inner(0), w.inner(1)
	w.rows(func(k, n int, off []int) {
		yr := y.Data[k : k+n]
		if sb == 0 {
			e := b.Data[off[1]]
			for i := range yr {
				yr[i] = powOf(a.Data[off[0]+i*sa], e)
			}
			return
		}
		for i := range yr {
			yr[i] = powOf(a.Data[off[0]+i*sa], b.Data[off[1]+i])
		}
	})
	if !isFloatType(op.OutType) {
		for k, v := range y.Data {
			y.Data[k] = math.Trunc(v) // an integer power of integers
		}
	}
	return y, nil
}

// powState holds the partial derivatives at every output element: da wrt
// the base, db wrt the exponent (computed on first use: the exponent is
// almost always a constant), and the walk reading base and exponent.
type powState struct {
	w      walk
	da, db []float64
	dbOnce sync.Once // directions may pull back at once
	// With one exponent e of 0, 1 or 2 (LayerNorm's square), da is not
	// stored: its value at x is powDeriv(x, e), cheaper to recompute per
	// direction than to write and read back.
	e     float64
	small bool
}

// powDeriv is the derivative of x^e with respect to x.
func powDeriv(x, e float64) float64 {
	switch e {
	case 0:
		return 0 // x^0 is 1 even at x = 0
	case 1:
		return 1
	case 2:
		return 2 * x
	}
	return e * powOf(x, e-1)
}

func powPrepare(_ *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
	a, b := in[0], in[1]
	shape, err := BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	st := &powState{w: bcastWalk(shape, a.Shape, b.Shape)}
	if b.Len() == 1 && (b.Data[0] == 0 || b.Data[0] == 1 || b.Data[0] == 2) {
		st.e, st.small = b.Data[0], true
		return st, nil
	}
	st.da = make([]float64, len(y.Data))
	sa, sb := st.w.inner(0), st.w.inner(1)
	st.w.rows(func(k, n int, off []int) {
		da := st.da[k : k+n]
		for i := range da {
			da[i] = powDeriv(a.Data[off[0]+i*sa], b.Data[off[1]+i*sb])
		}
	})
	return st, nil
}

// baseDeriv is da over the output row at k (n elements, the base's
// first at a[ao]), recomputed into buf when it is not stored.
func (st *powState) baseDeriv(a []float64, k, n, ao int, buf []float64) []float64 {
	if !st.small {
		return st.da[k : k+n]
	}
	sa := st.w.inner(0)
	buf = buf[:n]
	for i := range buf {
		buf[i] = powDeriv(a[ao+i*sa], st.e)
	}
	return buf
}

func (st *powState) expDeriv(in []*Tensor, y *Tensor) []float64 {
	st.dbOnce.Do(func() {
		st.db = make([]float64, len(y.Data))
		sa := st.w.inner(0)
		st.w.rows(func(k, n int, off []int) {
			for i, v := range y.Data[k : k+n] {
				if v != 0 { // d/de 0^e = 0 for e > 0, where log would give -Inf
					st.db[k+i] = v * math.Log(in[0].Data[off[0]+i*sa])
				}
			}
		})
	})
	return st.db
}

// baseDerivs calls f with the derivative da by the base for consecutive
// pieces of the output (from element k, whose base element is at ao), in
// pieces small enough for a recomputed da to stay in cache.
func (st *powState) baseDerivs(a []float64, f func(k, ao int, da []float64)) {
	sa := st.w.inner(0)
	var buf [512]float64
	st.w.rows(func(k, n int, off []int) {
		for i0 := 0; i0 < n; i0 += len(buf) {
			m := min(len(buf), n-i0)
			ao := off[0] + i0*sa
			f(k+i0, ao, st.baseDeriv(a, k+i0, m, ao, buf[:]))
		}
	})
}

func powJVP(_ *onnxio.Op, in []*Tensor, y *Tensor, s any, tin []*Tensor) (*Tensor, error) {
	st := s.(*powState)
	out := NewTensor(y.Shape, nil)
	if t := tin[0]; t != nil {
		sa := st.w.inner(0)
		st.baseDerivs(in[0].Data, func(k, ao int, da []float64) {
			for i := range da {
				out.Data[k+i] = da[i] * t.Data[ao+i*sa]
			}
		})
	}
	if t := tin[1]; t != nil {
		db := st.expDeriv(in, y)
		sb := st.w.inner(1)
		st.w.rows(func(k, n int, off []int) {
			for i := range n {
				out.Data[k+i] += db[k+i] * t.Data[off[1]+i*sb]
			}
		})
	}
	return out, nil
}

func powVJP(_ *onnxio.Op, in []*Tensor, y *Tensor, s any, g *Tensor, gin []*Tensor) error {
	st := s.(*powState)
	if d := gin[0]; d != nil {
		sa := st.w.inner(0)
		st.baseDerivs(in[0].Data, func(k, ao int, da []float64) {
			pullRow(d.Data, g.Data[k:k+len(da)], ao, sa, da, 0, 1, 0)
		})
	}
	if d := gin[1]; d != nil {
		db := st.expDeriv(in, y)
		sb := st.w.inner(1)
		st.w.rows(func(k, n int, off []int) {
			pullRow(d.Data, g.Data[k:k+n], off[1], sb, db, k, 1, 0)
		})
	}
	return nil
}

// ---- PRelu with a computed slope (a constant one has an op kind) ----

func preluForward(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, s, err := need2(in)
	if err != nil {
		return nil, err
	}
	g, err := broadcastPair(x, s)
	if err != nil {
		return nil, err
	}
	y := NewTensor(g.shape, nil)
	for k := range y.Data {
		v := x.Data[bcAt(g.ia, k)]
		if v < 0 {
			v *= s.Data[bcAt(g.ib, k)]
		}
		y.Data[k] = v
	}
	return y, nil
}

// pairPrepare keeps the broadcast of two operands.
func pairPrepare(_ *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	return broadcastPair(in[0], in[1])
}

// preluJVP: dy = dx where x >= 0, slope dx + x dslope where x < 0.
func preluJVP(_ *onnxio.Op, in []*Tensor, y *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	g := st.(*binaryGeom)
	x, s := in[0], in[1]
	out := NewTensor(y.Shape, nil)
	for k := range out.Data {
		v, d := x.Data[bcAt(g.ia, k)], 0.0
		if tin[0] != nil {
			d = tin[0].Data[bcAt(g.ia, k)]
		}
		if v < 0 {
			d *= s.Data[bcAt(g.ib, k)]
			if tin[1] != nil {
				d += v * tin[1].Data[bcAt(g.ib, k)]
			}
		}
		out.Data[k] = d
	}
	return out, nil
}

func preluVJP(_ *onnxio.Op, in []*Tensor, _ *Tensor, st any, gr *Tensor, gin []*Tensor) error {
	g := st.(*binaryGeom)
	x, s := in[0], in[1]
	for k, v := range gr.Data {
		xi, si := bcAt(g.ia, k), bcAt(g.ib, k)
		if x.Data[xi] >= 0 {
			if gin[0] != nil {
				gin[0].Data[xi] += v
			}
			continue
		}
		if gin[0] != nil {
			gin[0].Data[xi] += v * s.Data[si]
		}
		if gin[1] != nil {
			gin[1].Data[si] += v * x.Data[xi]
		}
	}
	return nil
}

// ---- Clip ----

// clipBounds are Clip's bounds: inputs 1 and 2 from opset 11, the min and
// max attributes before; absent means unbounded.
func clipBounds(op *onnxio.Op, in []*Tensor) (lo, hi float64, err error) {
	lo, hi = math.Inf(-1), math.Inf(1)
	if op.Opset != 0 && op.Opset < 11 {
		return op.AttrFloat("min", lo), op.AttrFloat("max", hi), nil
	}
	for k, p := range []*float64{&lo, &hi} {
		if k+1 < len(in) && in[k+1] != nil {
			if in[k+1].Len() != 1 {
				return 0, 0, fmt.Errorf("Clip bound %d has %d values, want a scalar", k+1, in[k+1].Len())
			}
			*p = in[k+1].Data[0]
		}
	}
	return lo, hi, nil
}

func clipForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	lo, hi, err := clipBounds(op, in)
	if err != nil {
		return nil, err
	}
	y := NewTensor(x.Shape, nil)
	for i, v := range x.Data {
		y.Data[i] = min(max(v, lo), hi) // min > max gives max, as ONNX says
	}
	return y, nil
}

// clipPrepare records which input each output element follows: 0 for x
// (bounds included, as torch's clamp backward), 1 for min, 2 for max.
func clipPrepare(op *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	lo, hi, err := clipBounds(op, in)
	if err != nil {
		return nil, err
	}
	src := make([]uint8, in[0].Len())
	for i, v := range in[0].Data {
		switch {
		case lo > hi || v > hi: // min > max gives max everywhere
			src[i] = 2
		case v < lo:
			src[i] = 1
		}
	}
	return src, nil
}

// clipJVP: the tangent of the input each element follows (the bounds are
// scalars).
func clipJVP(_ *onnxio.Op, _ []*Tensor, y *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	src := st.([]uint8)
	var bound [3]float64
	for k := 1; k <= 2; k++ {
		if k < len(tin) && tin[k] != nil {
			bound[k] = tin[k].Data[0]
		}
	}
	out := NewTensor(y.Shape, nil)
	for i, s := range src {
		switch {
		case s != 0:
			out.Data[i] = bound[s]
		case tin[0] != nil:
			out.Data[i] = tin[0].Data[i]
		}
	}
	return out, nil
}

func clipVJP(_ *onnxio.Op, _ []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
	src := st.([]uint8)
	for i, v := range g.Data {
		if k := int(src[i]); k < len(gin) && gin[k] != nil {
			if k == 0 {
				gin[0].Data[i] += v
			} else {
				gin[k].Data[0] += v
			}
		}
	}
	return nil
}

// ---- Sum, Mean, Max, Min ----

// variadicGeom is the broadcast of all the inputs of a variadic op.
type variadicGeom struct {
	shape []int
	idx   [][]int // per input, its broadcast map (nil: identity)
	win   []int   // Max, Min: the input each output element comes from
}

func variadicShape(in []*Tensor) (*variadicGeom, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("no inputs")
	}
	var shape []int
	for k, t := range in {
		if t == nil {
			return nil, fmt.Errorf("input %d: %w", k, errNoInput)
		}
		if k == 0 {
			shape = t.Shape
			continue
		}
		s, err := BroadcastShape(shape, t.Shape)
		if err != nil {
			return nil, err
		}
		shape = s
	}
	g := &variadicGeom{shape: append([]int(nil), shape...), idx: make([][]int, len(in))}
	for k, t := range in {
		g.idx[k] = bcastIndex(g.shape, t.Shape)
	}
	return g, nil
}

func variadicForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	g, err := variadicShape(in)
	if err != nil {
		return nil, err
	}
	y := NewTensor(g.shape, nil)
	g.combine(op.Type, in, y.Data)
	if op.Type == "Mean" && !isFloatType(op.OutType) {
		for k, v := range y.Data {
			y.Data[k] = math.Trunc(v)
		}
	}
	return y, nil
}

// combine computes the op into y; for Max and Min it records the winning
// input of each element when g.win is set (the first one on ties).
func (g *variadicGeom) combine(typ string, in []*Tensor, y []float64) {
	for k := range y {
		y[k] = in[0].Data[bcAt(g.idx[0], k)]
	}
	for j := 1; j < len(in); j++ {
		d, idx := in[j].Data, g.idx[j]
		switch typ {
		case "Sum", "Mean":
			for k := range y {
				y[k] += d[bcAt(idx, k)]
			}
		case "Max":
			for k := range y {
				// NaN propagates as in ONNX Runtime: a NaN input wins.
				if v := d[bcAt(idx, k)]; v > y[k] || math.IsNaN(v) && !math.IsNaN(y[k]) {
					y[k] = v
					if g.win != nil {
						g.win[k] = j
					}
				}
			}
		case "Min":
			for k := range y {
				if v := d[bcAt(idx, k)]; v < y[k] || math.IsNaN(v) && !math.IsNaN(y[k]) {
					y[k] = v
					if g.win != nil {
						g.win[k] = j
					}
				}
			}
		}
	}
	if typ == "Mean" {
		s := 1 / float64(len(in))
		for k := range y {
			y[k] *= s
		}
	}
}

func variadicPrepare(op *onnxio.Op, in []*Tensor, y *Tensor) (any, error) {
	g, err := variadicShape(in)
	if err != nil {
		return nil, err
	}
	if op.Type == "Max" || op.Type == "Min" {
		g.win = make([]int, y.Len())
		g.combine(op.Type, in, make([]float64, y.Len()))
	}
	return g, nil
}

func variadicJVP(op *onnxio.Op, _ []*Tensor, y *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	g := st.(*variadicGeom)
	out := NewTensor(y.Shape, nil)
	if g.win != nil {
		for k := range out.Data {
			j := g.win[k]
			if t := tin[j]; t != nil {
				out.Data[k] = t.Data[bcAt(g.idx[j], k)]
			}
		}
		return out, nil
	}
	s := 1.0
	if op.Type == "Mean" {
		s = 1 / float64(len(tin))
	}
	for j, t := range tin {
		if t == nil {
			continue
		}
		for k := range out.Data {
			out.Data[k] += s * t.Data[bcAt(g.idx[j], k)]
		}
	}
	return out, nil
}

func variadicVJP(op *onnxio.Op, _ []*Tensor, _ *Tensor, st any, gr *Tensor, gin []*Tensor) error {
	g := st.(*variadicGeom)
	if g.win != nil {
		for k, v := range gr.Data {
			j := g.win[k]
			if d := gin[j]; d != nil {
				d.Data[bcAt(g.idx[j], k)] += v
			}
		}
		return nil
	}
	s := 1.0
	if op.Type == "Mean" {
		s = 1 / float64(len(gin))
	}
	for j, d := range gin {
		if d == nil {
			continue
		}
		for k, v := range gr.Data {
			d.Data[bcAt(g.idx[j], k)] += s * v
		}
	}
	return nil
}
