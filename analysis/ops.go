package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Op families: the differentiator treats every op of a family alike.
const (
	famDense   = iota
	famAlias   // output is the input's data under another shape (derivative: identity)
	famDiag    // elementwise on one variable input: a diagonal Jacobian
	famBinary  // Add, Sub, Mul, Div
	famSoftmax // Softmax, LogSoftmax
	famNode    // OpNode: the op registry's kernels
)

func family(k onnxio.OpKind) int {
	switch k {
	case onnxio.OpDense:
		return famDense
	case onnxio.OpIdentity, onnxio.OpCast, onnxio.OpFlatten, onnxio.OpReshape, onnxio.OpSqueeze, onnxio.OpUnsqueeze:
		// Cast rounds in the forward pass but is straight-through for
		// derivatives: the rounding is piecewise constant, and the analysis
		// wants the derivative of the real-valued function it approximates.
		return famAlias
	case onnxio.OpAdd, onnxio.OpSub, onnxio.OpMul, onnxio.OpDiv:
		return famBinary
	case onnxio.OpSoftmax, onnxio.OpLogSoftmax:
		return famSoftmax
	case onnxio.OpNode:
		return famNode
	}
	return famDiag
}

const (
	sqrt2Inv    = 1 / math.Sqrt2
	invSqrt2Pi  = 0.3989422804014327 // 1/sqrt(2 pi)
	twoOverSqPi = 2 / 1.7724538509055159
	geluTanhC   = 0.7978845608028654 // sqrt(2/pi)
	geluTanhK   = 0.044715
)

// sigmoid avoids exp overflow: exp is only taken of -|x|.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// checkKind rejects op kinds and attribute values that the forward and
// derivative code do not know, before any work is done.
func checkKind(op *onnxio.Op) error {
	if op.Kind < onnxio.OpDense || op.Kind > onnxio.OpNode {
		return fmt.Errorf("unsupported op kind %d", int(op.Kind))
	}
	if op.Kind == onnxio.OpGelu && op.Approx != "" && op.Approx != "none" && op.Approx != "tanh" {
		return fmt.Errorf("unknown Gelu approximate=%q", op.Approx)
	}
	return nil
}

// unaryForward sets y = f(x) for the elementwise op kinds with no
// broadcast operand (everything in famDiag but PRelu and BatchNorm).
func unaryForward(op *onnxio.Op, x, y []float64) {
	y = y[:len(x)]
	// Elementwise, so the pieces give the same bits as one loop. The
	// transcendental activations (tens of ns per element) are worth two
	// goroutines from a few thousand values on: on a tanh MLP they are
	// most of a forward pass, which ec+'s refit runs many times.
	least := 1 << 16
	switch op.Kind {
	case onnxio.OpTanh, onnxio.OpSigmoid, onnxio.OpElu, onnxio.OpSelu, onnxio.OpSoftplus, onnxio.OpGelu, onnxio.OpErf:
		least = 1 << 12
	}
	parallelAbove(len(x), least, func(lo, hi int) { unaryForwardSeq(op, x[lo:hi], y[lo:hi]) })
}

func unaryForwardSeq(op *onnxio.Op, x, y []float64) {
	a := op.Alpha
	switch op.Kind {
	case onnxio.OpRelu:
		for i, v := range x {
			y[i] = max(v, 0)
		}
	case onnxio.OpLeakyRelu:
		for i, v := range x {
			if v < 0 {
				v *= a
			}
			y[i] = v
		}
	case onnxio.OpTanh:
		for i, v := range x {
			y[i] = math.Tanh(v)
		}
	case onnxio.OpSigmoid:
		for i, v := range x {
			y[i] = sigmoid(v)
		}
	case onnxio.OpHardSigmoid:
		for i, v := range x {
			y[i] = max(0, min(1, a*v+op.Beta))
		}
	case onnxio.OpHardSwish:
		for i, v := range x {
			y[i] = v * max(0, min(1, v/6+0.5))
		}
	case onnxio.OpElu:
		for i, v := range x {
			if v < 0 {
				v = a * math.Expm1(v)
			}
			y[i] = v
		}
	case onnxio.OpSelu:
		for i, v := range x {
			if v <= 0 {
				v = a * math.Expm1(v)
			}
			y[i] = op.Gamma * v
		}
	case onnxio.OpSoftplus:
		// As ONNX Runtime: no overflow for large x, no loss for very negative x.
		for i, v := range x {
			y[i] = math.Log1p(math.Exp(-math.Abs(v))) + max(v, 0)
		}
	case onnxio.OpGelu:
		if op.Approx == "tanh" {
			for i, v := range x {
				y[i] = 0.5 * v * (1 + math.Tanh(geluTanhC*(v+geluTanhK*v*v*v)))
			}
		} else {
			// erfc(-x/sqrt2) = 1 + erf(x/sqrt2), without cancellation for x << 0.
			for i, v := range x {
				y[i] = 0.5 * v * math.Erfc(-v*sqrt2Inv)
			}
		}
	case onnxio.OpErf:
		for i, v := range x {
			y[i] = math.Erf(v)
		}
	default:
		panic("analysis.unaryForwardSeq: " + op.Kind.String())
	}
}

// unaryDeriv sets d = f'(x) elementwise, given y = f(x). At a kink it takes
// the derivative of the branch ONNX uses at that point (Relu: 0 at 0).
// Terms of the form x * (something that underflows to 0) are skipped when
// that something is 0, so that huge |x| gives 0, not NaN.
func unaryDeriv(op *onnxio.Op, x, y, d []float64) {
	d = d[:len(x)]
	a := op.Alpha
	switch op.Kind {
	case onnxio.OpRelu:
		for i, v := range x {
			d[i] = 0
			if v > 0 {
				d[i] = 1
			}
		}
	case onnxio.OpLeakyRelu:
		for i, v := range x {
			d[i] = 1
			if v < 0 {
				d[i] = a
			}
		}
	case onnxio.OpTanh:
		for i, v := range y {
			d[i] = 1 - v*v
		}
	case onnxio.OpSigmoid:
		for i, v := range y {
			d[i] = v * (1 - v)
		}
	case onnxio.OpHardSigmoid:
		for i, v := range x {
			d[i] = 0
			if u := a*v + op.Beta; u > 0 && u < 1 {
				d[i] = a
			}
		}
	case onnxio.OpHardSwish:
		for i, v := range x {
			switch {
			case v <= -3:
				d[i] = 0
			case v >= 3:
				d[i] = 1
			default:
				d[i] = v/3 + 0.5
			}
		}
	case onnxio.OpElu:
		for i, v := range x {
			d[i] = 1
			if v < 0 {
				d[i] = a * math.Exp(v)
			}
		}
	case onnxio.OpSelu:
		for i, v := range x {
			d[i] = op.Gamma
			if v <= 0 {
				d[i] = op.Gamma * a * math.Exp(v)
			}
		}
	case onnxio.OpSoftplus:
		for i, v := range x {
			d[i] = sigmoid(v)
		}
	case onnxio.OpGelu:
		if op.Approx == "tanh" {
			for i, v := range x {
				t := math.Tanh(geluTanhC * (v + geluTanhK*v*v*v))
				g := 0.5 * (1 + t)
				if s := 1 - t*t; s != 0 {
					g += 0.5 * v * s * geluTanhC * (1 + 3*geluTanhK*v*v)
				}
				d[i] = g
			}
		} else {
			for i, v := range x {
				g := 0.5 * math.Erfc(-v*sqrt2Inv)
				if e := math.Exp(-0.5 * v * v); e != 0 {
					g += v * e * invSqrt2Pi
				}
				d[i] = g
			}
		}
	case onnxio.OpErf:
		for i, v := range x {
			d[i] = twoOverSqPi * math.Exp(-v*v)
		}
	default:
		panic("analysis.unaryDeriv: " + op.Kind.String())
	}
}

// softmaxGeom splits a shape into (outer, d, inner) so that the op
// normalises over d with stride inner. Before opset 13 the input is coerced
// to 2-D at axis and normalised over the whole trailing part; from 13 on,
// over the single axis.
func softmaxGeom(op *onnxio.Op, opset int64, shape []int) (outer, d, inner int, err error) {
	r := len(shape)
	ax := op.Axis
	if ax < -r || ax >= r {
		return 0, 0, 0, fmt.Errorf("axis %d out of range for rank %d", op.Axis, r)
	}
	if ax < 0 {
		ax += r
	}
	outer = ShapeSize(shape[:ax])
	if opset < 13 {
		return outer, ShapeSize(shape[ax:]), 1, nil
	}
	return outer, shape[ax], ShapeSize(shape[ax+1:]), nil
}

// softmaxForward normalises x into y over (outer, d, inner) blocks.
func softmaxForward(log bool, x, y []float64, outer, d, inner int) {
	for o := 0; o < outer; o++ {
		base := o * d * inner
		for in := 0; in < inner; in++ {
			b := base + in
			m := math.Inf(-1)
			for j := 0; j < d; j++ {
				m = max(m, x[b+j*inner])
			}
			if math.IsInf(m, -1) {
				m = 0 // all -Inf: keep exp(x-m) defined (gives 0/0 = NaN, as runtimes do)
			}
			s := 0.0
			for j := 0; j < d; j++ {
				e := math.Exp(x[b+j*inner] - m)
				if !log {
					y[b+j*inner] = e
				}
				s += e
			}
			if log {
				// (x-m) - log(s), not x - (m+log(s)): the latter rounds at
				// the magnitude of m.
				ls := math.Log(s)
				for j := 0; j < d; j++ {
					y[b+j*inner] = (x[b+j*inner] - m) - ls
				}
			} else {
				inv := 1 / s
				for j := 0; j < d; j++ {
					y[b+j*inner] *= inv
				}
			}
		}
	}
}

// softmaxJVP maps tangents dx to dy (both [P, shape]) given y; n is the
// size of one direction's block. Softmax: dy = y (dx - <y, dx>);
// LogSoftmax: dy = dx - <softmax, dx>.
func softmaxJVP(log bool, y, dx, dy []float64, outer, d, inner int) {
	n := outer * d * inner
	for p := 0; p*n < len(dx); p++ {
		off := p * n
		for o := 0; o < outer; o++ {
			for in := 0; in < inner; in++ {
				b := o*d*inner + in
				s := 0.0
				for j := 0; j < d; j++ {
					k := b + j*inner
					w := y[k]
					if log {
						w = math.Exp(w)
					}
					s += w * dx[off+k]
				}
				for j := 0; j < d; j++ {
					k := b + j*inner
					if log {
						dy[off+k] = dx[off+k] - s
					} else {
						dy[off+k] = y[k] * (dx[off+k] - s)
					}
				}
			}
		}
	}
}

// softmaxVJP accumulates dx += J^T g. Softmax: y (g - <g, y>);
// LogSoftmax: g - softmax * sum(g).
func softmaxVJP(log bool, y, g, dx []float64, outer, d, inner int) {
	n := outer * d * inner
	for p := 0; p*n < len(g); p++ {
		off := p * n
		for o := 0; o < outer; o++ {
			for in := 0; in < inner; in++ {
				b := o*d*inner + in
				s := 0.0
				for j := 0; j < d; j++ {
					k := b + j*inner
					if log {
						s += g[off+k]
					} else {
						s += g[off+k] * y[k]
					}
				}
				for j := 0; j < d; j++ {
					k := b + j*inner
					if log {
						dx[off+k] += g[off+k] - math.Exp(y[k])*s
					} else {
						dx[off+k] += y[k] * (g[off+k] - s)
					}
				}
			}
		}
	}
}

// aliasShape is the output shape of the ops whose output is their input's
// data under a new shape (Identity, Cast, Flatten, Reshape, Squeeze,
// Unsqueeze), with ONNX's rules for each.
func aliasShape(op *onnxio.Op, in []int) ([]int, error) {
	r := len(in)
	switch op.Kind {
	case onnxio.OpIdentity, onnxio.OpCast:
		return append([]int(nil), in...), nil
	case onnxio.OpFlatten:
		ax := op.Axis
		if ax < -r || ax > r {
			return nil, fmt.Errorf("axis %d out of range for rank %d", op.Axis, r)
		}
		if ax < 0 {
			ax += r
		}
		return []int{ShapeSize(in[:ax]), ShapeSize(in[ax:])}, nil
	case onnxio.OpReshape:
		return reshapeShape(op, in)
	case onnxio.OpSqueeze:
		drop := make([]bool, r)
		if len(op.Axes) == 0 {
			for i, d := range in {
				drop[i] = d == 1
			}
		}
		for _, a := range op.Axes {
			if a < -r || a >= r {
				return nil, fmt.Errorf("axis %d out of range for rank %d", a, r)
			}
			if a < 0 {
				a += r
			}
			if drop[a] {
				return nil, fmt.Errorf("axis %d repeated in %s", a, plain.List(op.Axes))
			}
			if in[a] != 1 {
				return nil, fmt.Errorf("cannot squeeze axis %d of shape %s: dimension is not 1", a, plain.Shape(in))
			}
			drop[a] = true
		}
		out := []int{}
		for i, d := range in {
			if !drop[i] {
				out = append(out, d)
			}
		}
		return out, nil
	case onnxio.OpUnsqueeze:
		or := r + len(op.Axes)
		ins := make([]bool, or)
		for _, a := range op.Axes {
			if a < -or || a >= or {
				return nil, fmt.Errorf("axis %d out of range for output rank %d", a, or)
			}
			if a < 0 {
				a += or
			}
			if ins[a] {
				return nil, fmt.Errorf("axis %d repeated in %s", a, plain.List(op.Axes))
			}
			ins[a] = true
		}
		out := make([]int, or)
		j := 0
		for i := range out {
			if ins[i] {
				out[i] = 1
			} else {
				out[i] = in[j]
				j++
			}
		}
		return out, nil
	}
	panic("analysis.aliasShape: " + op.Kind.String())
}

// reshapeShape applies ONNX Reshape's target: 0 copies the input's
// dimension at that index (a literal 0 with allowzero), -1 is inferred.
func reshapeShape(op *onnxio.Op, in []int) ([]int, error) {
	out := make([]int, len(op.Shape))
	infer := -1
	known := 1
	for i, s := range op.Shape {
		switch {
		case s == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("more than one -1 in target shape %s", plain.List(op.Shape))
			}
			infer = i
			continue
		case s == 0 && !op.AllowZero:
			if i >= len(in) {
				return nil, fmt.Errorf("target shape %s copies dimension %d of a rank-%d input", plain.List(op.Shape), i, len(in))
			}
			out[i] = in[i]
		case s < 0:
			return nil, fmt.Errorf("invalid dimension %d in target shape %s", s, plain.List(op.Shape))
		default:
			out[i] = int(s)
		}
		known *= out[i]
	}
	n := ShapeSize(in)
	if infer >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("cannot reshape %s to %s", plain.Shape(in), plain.List(op.Shape))
		}
		out[infer] = n / known
	} else if known != n {
		return nil, fmt.Errorf("cannot reshape %s (%d elements) to %s", plain.Shape(in), n, plain.Shape(out))
	}
	return out, nil
}
