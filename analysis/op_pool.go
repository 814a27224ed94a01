package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Pooling ops. MaxPool and GlobalMaxPool are differentiated through the
// argmax of each window, chosen in Prepare (ties go to the first maximum
// in window order, as ONNX Runtime does); the average pools are linear.

func init() {
	register("MaxPool", &Kernel{Check: checkWindowAttrs, ForwardAlloc: maxPoolForward, Prepare: maxPoolPrepare, JVP: argJVP, VJP: argVJP})
	register("AveragePool", &Kernel{Check: checkWindowAttrs, Forward: avgPoolForward, JVP: avgPoolJVP, VJP: avgPoolVJP})
	register("GlobalMaxPool", &Kernel{Forward: globalMaxForward, Prepare: globalMaxPrepare, JVP: argJVP, VJP: argVJP})
	register("GlobalAveragePool", &Kernel{Forward: globalAvgForward, JVP: globalAvgJVP, VJP: globalAvgVJP})
}

// poolGeom is a pooling op's window over x [N, C, spatial].
func poolGeom(op *onnxio.Op, x *Tensor) (*window, []int, error) {
	if x.Rank() < 3 {
		return nil, nil, fmt.Errorf("input shape %s: want [N, C, spatial...]", plain.Shape(x.Shape))
	}
	ks := op.AttrInts("kernel_shape")
	if len(ks) != x.Rank()-2 {
		return nil, nil, fmt.Errorf("kernel_shape %s for input shape %s", plain.Shape(ks), plain.Shape(x.Shape))
	}
	kernel := make([]int, len(ks))
	for i, k := range ks {
		kernel[i] = int(k)
	}
	w, err := windowOf(op, x.Shape[2:], kernel, op.AttrInt("ceil_mode", 0) != 0)
	if err != nil {
		return nil, nil, err
	}
	shape := append([]int{x.Shape[0], x.Shape[1]}, w.out[3-w.rank:]...)
	return w, shape, nil
}

// eachWindow calls f for every output position p of one channel with the
// input positions (flat within the channel) its window covers, in window
// order; pad counts the window's positions in the padded extent (what
// count_include_pad divides by).
func (w *window) eachWindow(f func(p int, idx []int, pad int)) {
	idx := make([]int, 0, w.kSize)
	p := 0
	for od := range w.out[0] {
		for oh := range w.out[1] {
			for ow := range w.out[2] {
				idx = idx[:0]
				pad := 1
				var o = [3]int{od, oh, ow}
				var lo, hi [3]int
				for a := range 3 {
					start := o[a]*w.stride[a] - w.padB[a]
					// Positions of the window within the padded extent.
					n := 0
					for k := range w.k[a] {
						if i := start + k*w.dil[a]; i < w.in[a]+w.padE[a] {
							n++
						}
					}
					pad *= n
					lo[a], hi[a] = start, n
				}
				for kd := range hi[0] {
					id := lo[0] + kd*w.dil[0]
					if id < 0 || id >= w.in[0] {
						continue
					}
					for kh := range hi[1] {
						ih := lo[1] + kh*w.dil[1]
						if ih < 0 || ih >= w.in[1] {
							continue
						}
						for kw := range hi[2] {
							iw := lo[2] + kw*w.dil[2]
							if iw < 0 || iw >= w.in[2] {
								continue
							}
							idx = append(idx, (id*w.in[1]+ih)*w.in[2]+iw)
						}
					}
				}
				f(p, idx, pad)
				p++
			}
		}
	}
}

// maxPool computes MaxPool's values and, when arg is not nil, the flat
// input index of each output's maximum (-1 for an empty window). The
// channels are spread over the cores: each writes only its own outputs.
func maxPool(w *window, nc int, x, y []float64, arg []int) {
	// The windows are the same for every channel: list them once, their
	// input positions back to back (window p reads idx[start[p]:start[p+1]]).
	var idx []int
	start := make([]int, 1, w.outSize+1)
	w.eachWindow(func(p int, wi []int, _ int) {
		idx = append(idx, wi...)
		start = append(start, len(idx))
	})
	parallelAbove(nc, max(2, (1<<15)/max(1, len(idx))), func(lo, hi int) {
		for c := lo; c < hi; c++ {
			xc := x[c*w.inSize : (c+1)*w.inSize]
			yc := y[c*w.outSize : (c+1)*w.outSize]
			for p := range yc {
				best, at := -math.MaxFloat32, -1
				for _, i := range idx[start[p]:start[p+1]] {
					if v := xc[i]; at < 0 || v > best {
						best, at = v, i
					}
				}
				yc[p] = best
				if arg != nil {
					if at >= 0 {
						at += c * w.inSize
					}
					arg[c*w.outSize+p] = at
				}
			}
		}
	})
}

func maxPoolForward(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	w, shape, err := poolGeom(op, x)
	if err != nil {
		return nil, err
	}
	y := alloc(shape)
	nc := x.Shape[0] * x.Shape[1]
	if op.OutIndex != 1 {
		maxPool(w, nc, x.Data, y.Data, nil)
		return y, nil
	}
	// Indices: flat indices into x (row-major, or with storage_order 1
	// column-major within each channel's 2-D plane).
	arg := make([]int, y.Len())
	maxPool(w, nc, x.Data, make([]float64, y.Len()), arg)
	colMajor := op.AttrInt("storage_order", 0) == 1
	for k, a := range arg {
		if colMajor && a >= 0 {
			c, i := a/w.inSize, a%w.inSize
			h, ww := i/w.in[2], i%w.in[2]
			a = c*w.inSize + ww*w.in[1] + h
		}
		y.Data[k] = float64(a)
	}
	return y, nil
}

func maxPoolPrepare(op *onnxio.Op, in []*Tensor, out *Tensor) (any, error) {
	w, _, err := poolGeom(op, in[0])
	if err != nil {
		return nil, err
	}
	arg := make([]int, out.Len())
	maxPool(w, in[0].Shape[0]*in[0].Shape[1], in[0].Data, make([]float64, out.Len()), arg)
	return arg, nil
}

// argJVP and argVJP differentiate an op whose output k is input element
// arg[k] (0 where arg[k] < 0).
func argJVP(_ *onnxio.Op, _ []*Tensor, out *Tensor, st any, tin []*Tensor) (*Tensor, error) {
	if tin[0] == nil {
		return nil, nil
	}
	arg := st.([]int)
	t := NewTensor(out.Shape, nil)
	for k, a := range arg {
		if a >= 0 {
			t.Data[k] = tin[0].Data[a]
		}
	}
	return t, nil
}

func argVJP(_ *onnxio.Op, _ []*Tensor, _ *Tensor, st any, g *Tensor, gin []*Tensor) error {
	if gin[0] == nil {
		return nil
	}
	for k, a := range st.([]int) {
		if a >= 0 {
			gin[0].Data[a] += g.Data[k]
		}
	}
	return nil
}

// avgPool adds to y the window means of x, or with transpose adds to x
// the pull-back of y (each output spread evenly over its window).
func avgPool(op *onnxio.Op, w *window, nc int, x, y []float64, transpose bool) {
	includePad := op.AttrInt("count_include_pad", 0) != 0
	type win struct {
		p   int
		idx []int
		inv float64
	}
	var wins []win
	w.eachWindow(func(p int, idx []int, pad int) {
		cnt := len(idx)
		if includePad {
			cnt = pad
		}
		inv := 0.0
		if cnt > 0 {
			inv = 1 / float64(cnt)
		}
		wins = append(wins, win{p, append([]int(nil), idx...), inv})
	})
	for c := range nc {
		xc := x[c*w.inSize : (c+1)*w.inSize]
		yc := y[c*w.outSize : (c+1)*w.outSize]
		for _, wn := range wins {
			if transpose {
				v := yc[wn.p] * wn.inv
				for _, i := range wn.idx {
					xc[i] += v
				}
				continue
			}
			s := 0.0
			for _, i := range wn.idx {
				s += xc[i]
			}
			yc[wn.p] += s * wn.inv
		}
	}
}

func avgPoolForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	w, shape, err := poolGeom(op, x)
	if err != nil {
		return nil, err
	}
	y := NewTensor(shape, nil)
	avgPool(op, w, x.Shape[0]*x.Shape[1], x.Data, y.Data, false)
	return y, nil
}

func avgPoolJVP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
	if tin[0] == nil {
		return nil, nil
	}
	return avgPoolForward(op, []*Tensor{tin[0]})
}

func avgPoolVJP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
	if gin[0] == nil {
		return nil
	}
	w, _, err := poolGeom(op, in[0])
	if err != nil {
		return err
	}
	avgPool(op, w, in[0].Shape[0]*in[0].Shape[1], gin[0].Data, g.Data, true)
	return nil
}

// globalShape is [N, C, 1, ...] for x [N, C, spatial...], with the number
// of channels and of elements per channel.
func globalShape(x *Tensor) ([]int, int, int, error) {
	if x.Rank() < 3 {
		return nil, 0, 0, fmt.Errorf("input shape %s: want [N, C, spatial...]", plain.Shape(x.Shape))
	}
	shape := make([]int, x.Rank())
	for i := range shape {
		shape[i] = 1
	}
	shape[0], shape[1] = x.Shape[0], x.Shape[1]
	return shape, x.Shape[0] * x.Shape[1], ShapeSize(x.Shape[2:]), nil
}

func globalAvgForward(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	shape, nc, inner, err := globalShape(x)
	if err != nil {
		return nil, err
	}
	y := NewTensor(shape, nil)
	for c := range nc {
		s := 0.0
		for _, v := range x.Data[c*inner : (c+1)*inner] {
			s += v
		}
		y.Data[c] = s / float64(inner)
	}
	return y, nil
}

func globalAvgJVP(op *onnxio.Op, _ []*Tensor, _ *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
	if tin[0] == nil {
		return nil, nil
	}
	return globalAvgForward(op, tin[:1])
}

func globalAvgVJP(_ *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
	if gin[0] == nil {
		return nil
	}
	_, nc, inner, err := globalShape(in[0])
	if err != nil {
		return err
	}
	for c := range nc {
		v := g.Data[c] / float64(inner)
		for i := range gin[0].Data[c*inner : (c+1)*inner] {
			gin[0].Data[c*inner+i] += v
		}
	}
	return nil
}

// globalMax computes GlobalMaxPool's values and their flat input indices.
func globalMax(x *Tensor) (*Tensor, []int, error) {
	shape, nc, inner, err := globalShape(x)
	if err != nil {
		return nil, nil, err
	}
	y := NewTensor(shape, nil)
	arg := make([]int, nc)
	for c := range nc {
		best, at := -math.MaxFloat32, -1
		for i, v := range x.Data[c*inner : (c+1)*inner] {
			if at < 0 || v > best {
				best, at = v, c*inner+i
			}
		}
		y.Data[c], arg[c] = best, at
	}
	return y, arg, nil
}

func globalMaxForward(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	y, _, err := globalMax(x)
	return y, err
}

func globalMaxPrepare(_ *onnxio.Op, in []*Tensor, _ *Tensor) (any, error) {
	_, arg, err := globalMax(in[0])
	return arg, err
}
