package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// Shape arithmetic and the elementwise ops it uses: Shape, Size,
// ConstantOfShape, Range, Cast, integer (and constant) Add/Sub/Mul/Div/
// Mod/Neg, comparisons, logic, ArgMax/ArgMin. The extractor gives float
// arithmetic between activations kinds of its own; these kernels see
// integers (shapes, indices) and all-constant operands, with numpy
// broadcasting and ONNX's integer semantics (Div truncates like C).

func init() {
	for _, name := range []string{"Add", "Sub", "Mul", "Div"} {
		register(name, arithKernel(name))
	}
	register("Mod", &Kernel{Check: checkMod, Forward: modForward})
	register("Neg", negKernel())
	for name, f := range map[string]func(a, b float64) bool{
		"Equal":          func(a, b float64) bool { return a == b },
		"Less":           func(a, b float64) bool { return a < b },
		"Greater":        func(a, b float64) bool { return a > b },
		"LessOrEqual":    func(a, b float64) bool { return a <= b },
		"GreaterOrEqual": func(a, b float64) bool { return a >= b },
		"And":            func(a, b float64) bool { return a != 0 && b != 0 },
		"Or":             func(a, b float64) bool { return a != 0 || b != 0 },
		"Xor":            func(a, b float64) bool { return (a != 0) != (b != 0) },
	} {
		register(name, &Kernel{Forward: boolBinary(f)})
	}
	register("Not", &Kernel{Forward: func(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
		x, err := need(in, 0)
		if err != nil {
			return nil, err
		}
		out := NewTensor(x.Shape, nil)
		for i, v := range x.Data {
			out.Data[i] = b2f(v == 0)
		}
		return out, nil
	}})
	register("Shape", &Kernel{Forward: shapeForward})
	register("Size", &Kernel{Forward: func(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
		x, err := need(in, 0)
		if err != nil {
			return nil, err
		}
		return NewTensor(nil, []float64{float64(x.Len())}), nil
	}})
	register("ConstantOfShape", &Kernel{Check: checkConstantOfShape, Forward: constantOfShapeForward})
	register("Range", &Kernel{Forward: rangeForward})
	register("Cast", castKernel())
	register("ArgMax", &Kernel{Forward: argForward(false)})
	register("ArgMin", &Kernel{Forward: argForward(true)})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func isIntType(t int32) bool { return !isFloatType(t) }

// bcast2 are the two inputs of a broadcasting binary op, the
// output shape and the element maps (nil: identity).
type bcast2 struct {
	a, b   *Tensor
	shape  []int
	ia, ib []int
}

func broadcast2(in []*Tensor) (*bcast2, error) {
	a, b, err := need2(in)
	if err != nil {
		return nil, err
	}
	shape, err := BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	return &bcast2{a: a, b: b, shape: shape, ia: bcastIndex(shape, a.Shape), ib: bcastIndex(shape, b.Shape)}, nil
}

func at(idx []int, k int) int {
	if idx == nil {
		return k
	}
	return idx[k]
}

// each calls f for every output element with the operands' positions.
func (o *bcast2) each(f func(k, i, j int)) {
	n := ShapeSize(o.shape)
	for k := range n {
		f(k, at(o.ia, k), at(o.ib, k))
	}
}

// arithKernel is Add, Sub, Mul or Div with numpy broadcasting: integer
// semantics for integer outputs (Div truncates toward zero, division by
// zero is an error), derivatives for float ones.
func arithKernel(name string) *Kernel {
	var f func(a, b float64) float64
	switch name {
	case "Add":
		f = func(a, b float64) float64 { return a + b }
	case "Sub":
		f = func(a, b float64) float64 { return a - b }
	case "Mul":
		f = func(a, b float64) float64 { return a * b }
	case "Div":
		f = func(a, b float64) float64 { return a / b }
	}
	// Partial derivatives by operand at (a, b).
	da := map[string]func(a, b float64) float64{
		"Add": func(a, b float64) float64 { return 1 },
		"Sub": func(a, b float64) float64 { return 1 },
		"Mul": func(a, b float64) float64 { return b },
		"Div": func(a, b float64) float64 { return 1 / b },
	}[name]
	db := map[string]func(a, b float64) float64{
		"Add": func(a, b float64) float64 { return 1 },
		"Sub": func(a, b float64) float64 { return -1 },
		"Mul": func(a, b float64) float64 { return a },
		"Div": func(a, b float64) float64 { return -a / (b * b) },
	}[name]
	return &Kernel{
		Check: checkLegacyBroadcast,
		Forward: func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
			o, err := broadcast2(in)
			if err != nil {
				return nil, err
			}
			out := NewTensor(o.shape, nil)
			integer := isIntType(op.OutType)
			var bad error
			o.each(func(k, i, j int) {
				x, y := o.a.Data[i], o.b.Data[j]
				if integer && name == "Div" {
					if y == 0 {
						bad = fmt.Errorf("integer division by zero")
						return
					}
					out.Data[k] = math.Trunc(x / y)
					return
				}
				out.Data[k] = f(x, y)
			})
			if bad != nil {
				return nil, bad
			}
			if integer {
				wrapInts(op.OutType, out.Data)
			}
			return out, nil
		},
		JVP: func(_ *onnxio.Op, in []*Tensor, out *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
			o, err := broadcast2(in)
			if err != nil {
				return nil, err
			}
			t := NewTensor(out.Shape, nil)
			o.each(func(k, i, j int) {
				x, y := o.a.Data[i], o.b.Data[j]
				if tin[0] != nil {
					t.Data[k] += da(x, y) * tin[0].Data[i]
				}
				if tin[1] != nil {
					t.Data[k] += db(x, y) * tin[1].Data[j]
				}
			})
			return t, nil
		},
		VJP: func(_ *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
			o, err := broadcast2(in)
			if err != nil {
				return err
			}
			o.each(func(k, i, j int) {
				x, y := o.a.Data[i], o.b.Data[j]
				if gin[0] != nil {
					gin[0].Data[i] += da(x, y) * g.Data[k]
				}
				if gin[1] != nil {
					gin[1].Data[j] += db(x, y) * g.Data[k]
				}
			})
			return nil
		},
	}
}

func checkLegacyBroadcast(op *onnxio.Op) error {
	if op.Opset != 0 && op.Opset < 7 && op.AttrInt("broadcast", 0) != 0 {
		return fmt.Errorf("legacy broadcast attribute")
	}
	return nil
}

// wrapInts wraps integer results to the range of a narrow integer type,
// as the runtime's fixed-width arithmetic does.
func wrapInts(t int32, v []float64) {
	var bits uint
	signed := true
	switch t {
	case onnxio.Int8:
		bits = 8
	case onnxio.Uint8:
		bits, signed = 8, false
	case onnxio.Int32:
		bits = 32
	default:
		return
	}
	for i, x := range v {
		v[i] = wrapInt(x, bits, signed)
	}
}

func wrapInt(x float64, bits uint, signed bool) float64 {
	u := uint64(int64(x)) & (1<<bits - 1)
	if signed && u >= 1<<(bits-1) {
		return float64(int64(u) - 1<<bits)
	}
	return float64(u)
}

func checkMod(op *onnxio.Op) error {
	if isFloatType(op.OutType) && op.AttrInt("fmod", 0) == 0 {
		return fmt.Errorf("fmod=0 on float inputs (ONNX requires fmod=1)")
	}
	return nil
}

// modForward: fmod=1 takes the dividend's sign (C's fmod), fmod=0 the
// divisor's (Python's %), integers only.
func modForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	o, err := broadcast2(in)
	if err != nil {
		return nil, err
	}
	out := NewTensor(o.shape, nil)
	cmod := op.AttrInt("fmod", 0) != 0
	var bad error
	o.each(func(k, i, j int) {
		x, y := o.a.Data[i], o.b.Data[j]
		if y == 0 && isIntType(op.OutType) {
			bad = fmt.Errorf("integer modulo by zero")
			return
		}
		r := math.Mod(x, y)
		if !cmod && r != 0 && (r < 0) != (y < 0) {
			r += y
		}
		out.Data[k] = r
	})
	return out, bad
}

func negKernel() *Kernel {
	return &Kernel{
		Forward: func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
			x, err := need(in, 0)
			if err != nil {
				return nil, err
			}
			out := NewTensor(x.Shape, nil)
			for i, v := range x.Data {
				out.Data[i] = -v
			}
			if isIntType(op.OutType) {
				wrapInts(op.OutType, out.Data)
			}
			return out, nil
		},
		JVP: func(_ *onnxio.Op, _ []*Tensor, out *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
			if tin[0] == nil {
				return nil, nil
			}
			t := NewTensor(out.Shape, nil)
			for i, v := range tin[0].Data {
				t.Data[i] = -v
			}
			return t, nil
		},
		VJP: func(_ *onnxio.Op, _ []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
			if gin[0] != nil {
				for i, v := range g.Data {
					gin[0].Data[i] -= v
				}
			}
			return nil
		},
	}
}

// boolBinary is a broadcasting comparison or logical op (bool output).
func boolBinary(f func(a, b float64) bool) func(*onnxio.Op, []*Tensor) (*Tensor, error) {
	return func(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
		o, err := broadcast2(in)
		if err != nil {
			return nil, err
		}
		out := NewTensor(o.shape, nil)
		o.each(func(k, i, j int) { out.Data[k] = b2f(f(o.a.Data[i], o.b.Data[j])) })
		return out, nil
	}
}

// shapeForward: opset 15's start and end select a range of the axes
// (negative from the end, clamped).
func shapeForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	clamp := func(v int64) int {
		if v < 0 {
			v += int64(r)
		}
		return int(min(max(v, 0), int64(r)))
	}
	s, e := clamp(op.AttrInt("start", 0)), clamp(op.AttrInt("end", int64(r)))
	e = max(e, s)
	out := NewTensor([]int{e - s}, nil)
	for i, d := range x.Shape[s:e] {
		out.Data[i] = float64(d)
	}
	return out, nil
}

func checkConstantOfShape(op *onnxio.Op) error {
	if a, ok := op.Attrs["value"]; ok && (a.Kind != onnxio.AttrIsTensor || a.Tensor == nil || len(a.Tensor.Data) != 1) {
		return fmt.Errorf("value attribute is not a one-element tensor")
	}
	return nil
}

func constantOfShapeForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	s, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	shape := intsAt(s)
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in %s", plain.List(shape))
		}
	}
	v := 0.0
	if a, ok := op.Attrs["value"]; ok && a.Tensor != nil && len(a.Tensor.Data) == 1 {
		v = a.Tensor.Data[0]
	}
	out := NewTensor(shape, nil)
	if v != 0 {
		for i := range out.Data {
			out.Data[i] = v
		}
	}
	return out, nil
}

// rangeForward: ceil((limit-start)/delta) elements, none when negative.
func rangeForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	var v [3]float64
	for k := range v {
		t, err := need(in, k)
		if err != nil {
			return nil, err
		}
		if t.Len() != 1 {
			return nil, fmt.Errorf("input %d has %d values, want a scalar", k, t.Len())
		}
		v[k] = t.Data[0]
	}
	start, limit, delta := v[0], v[1], v[2]
	if delta == 0 {
		return nil, fmt.Errorf("delta 0")
	}
	n := max(0, int(math.Ceil((limit-start)/delta)))
	if n > 1<<31 {
		return nil, fmt.Errorf("range of %d elements", n)
	}
	out := NewTensor([]int{n}, nil)
	x := start
	for i := range n {
		// ONNX defines Range by repeated addition.
		out.Data[i] = x
		x += delta
		if isFloatType(op.OutType) {
			x = onnxio.RoundTo(op.OutType, x)
		}
	}
	return out, nil
}

// castKernel converts with ONNX's semantics: to a float type by rounding
// as the runtime stores it, to an integer type by truncation toward zero
// (wrapping narrow types), to bool by x != 0. Between float types the
// derivative is the identity (straight-through), as for the extractor's
// own Cast.
func castKernel() *Kernel {
	return &Kernel{
		Check: func(op *onnxio.Op) error {
			if !castable(int32(op.AttrInt("to", 0))) {
				return fmt.Errorf("cast to type %s", onnxio.TypeName(int32(op.AttrInt("to", 0))))
			}
			return nil
		},
		Forward: func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
			x, err := need(in, 0)
			if err != nil {
				return nil, err
			}
			to := int32(op.AttrInt("to", 0))
			out := NewTensor(x.Shape, slices.Clone(x.Data))
			castInto(to, out.Data)
			return out, nil
		},
		JVP: func(_ *onnxio.Op, _ []*Tensor, out *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
			if tin[0] == nil {
				return nil, nil
			}
			return &Tensor{Shape: out.Shape, Data: tin[0].Data}, nil
		},
		VJP: func(_ *onnxio.Op, _ []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
			if gin[0] != nil {
				addTo(gin[0].Data, g.Data)
			}
			return nil
		},
	}
}

func castable(to int32) bool {
	switch to {
	case onnxio.Bool, onnxio.Int8, onnxio.Uint8, onnxio.Int32, onnxio.Int64,
		onnxpbInt16, onnxpbUint16, onnxpbUint32, onnxpbUint64:
		return true
	}
	return onnxio.IsFloatType(to)
}

// ONNX element types without a name in onnxio.
const (
	onnxpbUint16 = int32(pb.TensorProto_UINT16)
	onnxpbInt16  = int32(pb.TensorProto_INT16)
	onnxpbUint32 = int32(pb.TensorProto_UINT32)
	onnxpbUint64 = int32(pb.TensorProto_UINT64)
)

func castInto(to int32, v []float64) {
	switch {
	case to == onnxio.Bool:
		for i, x := range v {
			v[i] = b2f(x != 0)
		}
	case onnxio.IsFloatType(to):
		for i, x := range v {
			v[i] = onnxio.RoundTo(to, x)
		}
	default:
		for i, x := range v {
			v[i] = math.Trunc(x)
		}
		switch to {
		case onnxio.Int8, onnxio.Uint8, onnxio.Int32:
			wrapInts(to, v)
		case onnxpbInt16:
			for i, x := range v {
				v[i] = wrapInt(x, 16, true)
			}
		case onnxpbUint16:
			for i, x := range v {
				v[i] = wrapInt(x, 16, false)
			}
		case onnxpbUint32:
			for i, x := range v {
				v[i] = wrapInt(x, 32, false)
			}
		}
	}
}

// argForward is ArgMax or ArgMin along axis (keepdims, select_last_index).
func argForward(least bool) func(*onnxio.Op, []*Tensor) (*Tensor, error) {
	return func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
		x, err := need(in, 0)
		if err != nil {
			return nil, err
		}
		axis, err := normAxis(int(op.AttrInt("axis", 0)), max(x.Rank(), 1))
		if err != nil {
			return nil, err
		}
		if x.Rank() == 0 {
			return NewTensor(nil, []float64{0}), nil
		}
		last := op.AttrInt("select_last_index", 0) != 0
		d := x.Shape[axis]
		if d == 0 {
			return nil, fmt.Errorf("empty axis %d", axis)
		}
		outer, inner := ShapeSize(x.Shape[:axis]), ShapeSize(x.Shape[axis+1:])
		shape := slices.Clone(x.Shape)
		if op.AttrInt("keepdims", 1) != 0 {
			shape[axis] = 1
		} else {
			shape = slices.Delete(shape, axis, axis+1)
		}
		out := NewTensor(shape, nil)
		for o := range outer {
			for k := range inner {
				best, bi := x.Data[o*d*inner+k], 0
				for j := 1; j < d; j++ {
					v := x.Data[(o*d+j)*inner+k]
					better := v > best || (last && v == best)
					if least {
						better = v < best || (last && v == best)
					}
					if better {
						best, bi = v, j
					}
				}
				out.Data[o*inner+k] = float64(bi)
			}
		}
		return out, nil
	}
}
