package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"runtime"
	"sync"

	"github.com/ecprune/ecprune/onnxio"
)

// Convolutional ops: Conv (im2col around the package's matrix product,
// col2im for its pull-back), ConvTranspose (the same two the other way
// round) and Pad (a gather map). The pooling ops are
// in op_pool.go; they share the window geometry below.

func init() {
	register("Conv", &Kernel{Check: checkWindowAttrs, ForwardAlloc: convForward, JVP: convJVP, VJP: convVJP})
	register("ConvTranspose", &Kernel{Check: checkWindowAttrs, Forward: convTForward, JVP: convTJVP, VJP: convTVJP})
	register("Pad", gatherKernel(padMap, checkPad))
}

// window is the geometry of a sliding window over 1 to 3 spatial axes,
// padded in front with unit axes (size 1, kernel 1, stride 1, no padding)
// to three, so that one set of loops serves every rank.
type window struct {
	rank                    int // spatial rank of the op
	in, k, out              [3]int
	stride, dil, padB, padE [3]int
	inSize, kSize, outSize  int
}

var autoPads = map[string]bool{"": true, "NOTSET": true, "VALID": true, "SAME_UPPER": true, "SAME_LOWER": true}

// checkWindowAttrs rejects attribute values no window can have.
func checkWindowAttrs(op *onnxio.Op) error {
	if ap := op.AttrString("auto_pad", "NOTSET"); !autoPads[ap] {
		return fmt.Errorf("auto_pad %q is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER", ap)
	}
	for _, a := range []string{"kernel_shape", "strides", "dilations"} {
		for _, v := range op.AttrInts(a) {
			if v < 1 {
				return fmt.Errorf("%s %s: values must be positive", a, plain.List(op.AttrInts(a)))
			}
		}
	}
	for _, v := range op.AttrInts("pads") {
		if v < 0 {
			return fmt.Errorf("pads %s: negative padding is not supported", plain.List(op.AttrInts("pads")))
		}
	}
	if g := op.AttrInt("group", 1); g < 1 {
		return fmt.Errorf("group %d: must be positive", g)
	}
	if op.AttrInt("storage_order", 0) != 0 && op.OutIndex == 1 && len(op.AttrInts("kernel_shape")) != 2 {
		return fmt.Errorf("storage_order 1 is supported for 2-D pooling only")
	}
	return nil
}

// attrDims reads an integer-list attribute of r values (def each when
// absent).
func attrDims(op *onnxio.Op, name string, r, def int) ([]int, error) {
	a := op.AttrInts(name)
	v := make([]int, r)
	if a == nil {
		for i := range v {
			v[i] = def
		}
		return v, nil
	}
	if len(a) != r {
		return nil, fmt.Errorf("%s %s: want %d values", name, plain.List(a), r)
	}
	for i, x := range a {
		v[i] = int(x)
	}
	return v, nil
}

// windowOf computes the output size and padding of a window of the given
// kernel over the spatial sizes in, from the op's strides, dilations,
// pads and auto_pad (ONNX's rules; ceil rounds the output size up as
// pooling's ceil_mode does, dropping a last window that would start in the
// end padding, as PyTorch and ONNX Runtime do).
func windowOf(op *onnxio.Op, in, kernel []int, ceil bool) (*window, error) {
	r := len(in)
	if r < 1 || r > 3 {
		return nil, fmt.Errorf("%d spatial axes; 1 to 3 are supported", r)
	}
	if len(kernel) != r {
		return nil, fmt.Errorf("kernel %s for %d spatial axes", plain.Shape(kernel), r)
	}
	strides, err := attrDims(op, "strides", r, 1)
	if err != nil {
		return nil, err
	}
	dil, err := attrDims(op, "dilations", r, 1)
	if err != nil {
		return nil, err
	}
	pads, err := attrDims(op, "pads", 2*r, 0)
	if err != nil {
		return nil, err
	}
	w := &window{rank: r}
	for i := range 3 {
		w.in[i], w.k[i], w.out[i], w.stride[i], w.dil[i] = 1, 1, 1, 1, 1
	}
	ap := op.AttrString("auto_pad", "NOTSET")
	for i := range r {
		j := 3 - r + i
		n, k, s, d := in[i], kernel[i], strides[i], dil[i]
		if k < 1 || s < 1 || d < 1 {
			return nil, fmt.Errorf("kernel %s, strides %s, dilations %s: values must be positive", plain.Shape(kernel), plain.List(strides), plain.List(dil))
		}
		dk := (k-1)*d + 1
		var pb, pe, o int
		switch ap {
		case "", "NOTSET", "VALID":
			if ap != "VALID" {
				pb, pe = pads[i], pads[i+r]
			}
			if pb < 0 || pe < 0 {
				return nil, fmt.Errorf("pads %s: negative padding is not supported", plain.List(pads))
			}
			span := n + pb + pe - dk
			if span < 0 {
				return nil, fmt.Errorf("dilated kernel of %d is larger than the padded input of %d on spatial axis %d", dk, n+pb+pe, i)
			}
			o = span/s + 1
			if ceil {
				o = (span+s-1)/s + 1
				if (o-1)*s >= n+pb {
					o--
				}
			}
		case "SAME_UPPER", "SAME_LOWER":
			o = (n + s - 1) / s
			total := max(0, (o-1)*s+dk-n)
			pb = total / 2
			if ap == "SAME_LOWER" {
				pb = total - total/2
			}
			pe = total - pb
		default:
			return nil, fmt.Errorf("auto_pad %q is not supported", ap)
		}
		w.in[j], w.k[j], w.out[j], w.stride[j], w.dil[j], w.padB[j], w.padE[j] = n, k, o, s, d, pb, pe
	}
	w.sizes()
	return w, nil
}

func (w *window) sizes() {
	w.inSize = w.in[0] * w.in[1] * w.in[2]
	w.kSize = w.k[0] * w.k[1] * w.k[2]
	w.outSize = w.out[0] * w.out[1] * w.out[2]
}

// span is the range [lo, hi) of output positions along axis a at which
// input coordinate o*stride + i0 falls inside the input.
func (w *window) span(a, i0 int) (lo, hi int) {
	s, n := w.stride[a], w.in[a]
	if i0 < 0 {
		lo = (-i0 + s - 1) / s
	}
	if n-1-i0 >= 0 {
		hi = (n-1-i0)/s + 1
	}
	hi = min(hi, w.out[a])
	lo = min(lo, hi)
	return lo, hi
}

// colRow sets dst (one row of im2col: outSize values) to the input values
// of channel xc that kernel offset (kd, kh, kw) meets at each output
// position, zero where it falls in the padding.
func (w *window) colRow(xc []float64, kd, kh, kw int, dst []float64) {
	o1, o2 := w.out[1], w.out[2]
	iw0 := kw*w.dil[2] - w.padB[2]
	lo, hi := w.span(2, iw0)
	s2 := w.stride[2]
	p := 0
	for od := range w.out[0] {
		id := od*w.stride[0] + kd*w.dil[0] - w.padB[0]
		if id < 0 || id >= w.in[0] {
			clear(dst[p : p+o1*o2])
			p += o1 * o2
			continue
		}
		for oh := range o1 {
			ih := oh*w.stride[1] + kh*w.dil[1] - w.padB[1]
			seg := dst[p : p+o2]
			p += o2
			if ih < 0 || ih >= w.in[1] {
				clear(seg)
				continue
			}
			xr := xc[(id*w.in[1]+ih)*w.in[2] : (id*w.in[1]+ih+1)*w.in[2]]
			clear(seg[:lo])
			clear(seg[hi:])
			if lo == hi {
				continue
			}
			if s2 == 1 {
				copy(seg[lo:hi], xr[lo+iw0:hi+iw0])
			} else {
				for ow := lo; ow < hi; ow++ {
					seg[ow] = xr[ow*s2+iw0]
				}
			}
		}
	}
}

// addRow is colRow's transpose: it adds src (one row of columns) into the
// input positions of channel xc that kernel offset (kd, kh, kw) meets.
func (w *window) addRow(xc []float64, kd, kh, kw int, src []float64) {
	o1, o2 := w.out[1], w.out[2]
	iw0 := kw*w.dil[2] - w.padB[2]
	lo, hi := w.span(2, iw0)
	s2 := w.stride[2]
	p := 0
	for od := range w.out[0] {
		id := od*w.stride[0] + kd*w.dil[0] - w.padB[0]
		if id < 0 || id >= w.in[0] {
			p += o1 * o2
			continue
		}
		for oh := range o1 {
			ih := oh*w.stride[1] + kh*w.dil[1] - w.padB[1]
			seg := src[p : p+o2]
			p += o2
			if ih < 0 || ih >= w.in[1] {
				continue
			}
			xr := xc[(id*w.in[1]+ih)*w.in[2] : (id*w.in[1]+ih+1)*w.in[2]]
			if lo == hi {
				continue
			}
			if s2 == 1 {
				xs := xr[lo+iw0 : hi+iw0]
				for i, v := range seg[lo:hi] {
					xs[i] += v
				}
			} else {
				for ow := lo; ow < hi; ow++ {
					xr[ow*s2+iw0] += seg[ow]
				}
			}
		}
	}
}

// pointwise reports whether the window is the identity map of positions
// (1x1 kernel, unit strides, no padding): im2col is then the input itself.
func (w *window) pointwise() bool {
	return w.kSize == 1 && w.stride == [3]int{1, 1, 1} && w.padB == [3]int{} && w.padE == [3]int{} && w.inSize == w.outSize
}

// im2col sets col (cg*kSize rows of outSize) to the patches of x (cg
// channels of inSize values).
func (w *window) im2col(x []float64, cg int, col []float64) {
	L := w.outSize
	row := 0
	for c := range cg {
		xc := x[c*w.inSize : (c+1)*w.inSize]
		for kd := range w.k[0] {
			for kh := range w.k[1] {
				for kw := range w.k[2] {
					w.colRow(xc, kd, kh, kw, col[row*L:(row+1)*L])
					row++
				}
			}
		}
	}
}

// col2im adds col (cg*kSize rows of outSize) back into x (cg channels of
// inSize values): the transpose of im2col.
func (w *window) col2im(col []float64, cg int, x []float64) {
	L := w.outSize
	row := 0
	for c := range cg {
		xc := x[c*w.inSize : (c+1)*w.inSize]
		for kd := range w.k[0] {
			for kh := range w.k[1] {
				for kw := range w.k[2] {
					w.addRow(xc, kd, kh, kw, col[row*L:(row+1)*L])
					row++
				}
			}
		}
	}
}

// eachSample runs f over samples [0, n) in parallel chunks, each with its
// own scratch of scratch float64s, unless one sample's product (work
// multiply-adds) is large enough for the matrix product's own workers.
func eachSample(n, work, scratch int, f func(lo, hi int, buf []float64)) {
	w := runtime.GOMAXPROCS(0)
	if w == 1 || n < 2 || work >= 1<<21 || n*work < 1<<17 {
		buf := getBuf[float64](scratch)
		defer putBuf(buf)
		f(0, n, *buf)
		return
	}
	var wg sync.WaitGroup
	step := (n + w - 1) / w
	for lo := 0; lo < n; lo += step {
		hi := min(n, lo+step)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := getBuf[float64](scratch)
			defer putBuf(buf)
			f(lo, hi, *buf)
		}()
	}
	wg.Wait()
}

// convGeom is a Conv's shapes: x [N, C, spatial], w [M, C/G, kernel].
type convGeom struct {
	win        *window
	n, c, m, g int
	cg, mg     int // channels per group, in and out
	outShape   []int
}

func convGeomOf(op *onnxio.Op, x, w *Tensor) (*convGeom, error) {
	if x.Rank() < 3 || w.Rank() != x.Rank() {
		return nil, fmt.Errorf("input shape %s and weight shape %s: want [N, C, spatial...] and [M, C/group, kernel...]", plain.Shape(x.Shape), plain.Shape(w.Shape))
	}
	g := int(op.AttrInt("group", 1))
	cg := w.Shape[1]
	if g < 1 || x.Shape[1] != cg*g || w.Shape[0]%g != 0 {
		return nil, fmt.Errorf("input shape %s, weight shape %s and group %d do not match", plain.Shape(x.Shape), plain.Shape(w.Shape), g)
	}
	kernel := w.Shape[2:]
	if ks := op.AttrInts("kernel_shape"); ks != nil {
		for i, k := range ks {
			if i >= len(kernel) || int(k) != kernel[i] {
				return nil, fmt.Errorf("kernel_shape %s differs from the weight's %s", plain.Shape(ks), plain.Shape(kernel))
			}
		}
	}
	win, err := windowOf(op, x.Shape[2:], kernel, false)
	if err != nil {
		return nil, err
	}
	cv := &convGeom{win: win, n: x.Shape[0], c: x.Shape[1], m: w.Shape[0], g: g, cg: cg, mg: w.Shape[0] / g}
	cv.outShape = append([]int{cv.n, cv.m}, win.out[3-win.rank:]...)
	return cv, nil
}

// conv adds to y (N x M x outSize) the convolution of x (N x C x inSize)
// with w (M x Cg x kSize), and b[m] to channel m when b is not nil (in
// the same pass over each sample, while its outputs are in cache).
func (cv *convGeom) conv(x, w, b, y []float64) {
	win := cv.win
	ck, L := cv.cg*win.kSize, win.outSize
	pw := win.pointwise()
	scratch := ck * L
	if pw {
		scratch = 0
	}
	eachSample(cv.n, cv.m*ck*L, scratch, func(lo, hi int, col []float64) {
		for n := lo; n < hi; n++ {
			for g := range cv.g {
				xg := x[(n*cv.c+g*cv.cg)*win.inSize : (n*cv.c+(g+1)*cv.cg)*win.inSize]
				if pw {
					col = xg
				} else {
					win.im2col(xg, cv.cg, col)
				}
				yg := y[(n*cv.m+g*cv.mg)*L : (n*cv.m+(g+1)*cv.mg)*L]
				wg := w[g*cv.mg*ck : (g+1)*cv.mg*ck]
				if b != nil {
					addBias(yg, b[g*cv.mg:(g+1)*cv.mg], 1, cv.mg, L)
				}
				if cv.mg == 1 {
					// Depthwise: a matrix-vector product, not worth a GEMM.
					for r, a := range wg {
						if a == 0 {
							continue
						}
						for i, v := range col[r*L : (r+1)*L] {
							yg[i] += a * v
						}
					}
					continue
				}
				matmul(false, false, cv.mg, L, ck, wg, col, yg, 1)
			}
		}
	})
}

// convT adds to x (N x C x inSize) the transposed convolution of y (N x M
// x outSize) with w (M x Cg x kSize): the pull-back of conv through x.
func (cv *convGeom) convT(y, w, x []float64) {
	win := cv.win
	ck, L := cv.cg*win.kSize, win.outSize
	eachSample(cv.n, cv.m*ck*L, ck*L, func(lo, hi int, col []float64) {
		for n := lo; n < hi; n++ {
			for g := range cv.g {
				yg := y[(n*cv.m+g*cv.mg)*L : (n*cv.m+(g+1)*cv.mg)*L]
				wg := w[g*cv.mg*ck : (g+1)*cv.mg*ck]
				xg := x[(n*cv.c+g*cv.cg)*win.inSize : (n*cv.c+(g+1)*cv.cg)*win.inSize]
				if win.pointwise() {
					matmul(true, false, ck, L, cv.mg, wg, yg, xg, 1)
					continue
				}
				matmul(true, false, ck, L, cv.mg, wg, yg, col, 0)
				win.col2im(col, cv.cg, xg)
			}
		}
	})
}

// convW adds to gw (M x Cg x kSize) the pull-back of g (N x M x outSize)
// through the weights: sum over samples of g x-patches^T.
func (cv *convGeom) convW(x, g, gw []float64) {
	win := cv.win
	ck, L := cv.cg*win.kSize, win.outSize
	col := make([]float64, ck*L)
	for n := range cv.n {
		for gr := range cv.g {
			xg := x[(n*cv.c+gr*cv.cg)*win.inSize : (n*cv.c+(gr+1)*cv.cg)*win.inSize]
			win.im2col(xg, cv.cg, col)
			gg := g[(n*cv.m+gr*cv.mg)*L : (n*cv.m+(gr+1)*cv.mg)*L]
			matmul(false, true, cv.mg, ck, L, gg, col, gw[gr*cv.mg*ck:(gr+1)*cv.mg*ck], 1)
		}
	}
}

// addBias adds b[m] to every output of channel m.
func addBias(y []float64, b []float64, n, m, L int) {
	for s := range n {
		for c := range m {
			v := b[c]
			row := y[(s*m+c)*L : (s*m+c+1)*L]
			for i := range row {
				row[i] += v
			}
		}
	}
}

// convInputs returns a Conv's x, w and optional b (checked against m).
func convInputs(in []*Tensor, outCh func(w *Tensor) int) (x, w, b *Tensor, err error) {
	if x, err = need(in, 0); err != nil {
		return
	}
	if w, err = need(in, 1); err != nil {
		return
	}
	if len(in) > 2 && in[2] != nil {
		b = in[2]
		if m := outCh(w); b.Len() != m {
			err = fmt.Errorf("bias of %d values for %d output channels", b.Len(), m)
		}
	}
	return
}

func convForward(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
	x, w, b, err := convInputs(in, func(w *Tensor) int { return w.Shape[0] })
	if err != nil {
		return nil, err
	}
	cv, err := convGeomOf(op, x, w)
	if err != nil {
		return nil, err
	}
	y := alloc(cv.outShape)
	var bias []float64
	if b != nil {
		bias = b.Data
	}
	cv.conv(x.Data, w.Data, bias, y.Data)
	return y, nil
}

// convJVP: Conv is bilinear in (x, w) and affine in b.
func convJVP(op *onnxio.Op, in []*Tensor, out *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
	cv, err := convGeomOf(op, in[0], in[1])
	if err != nil {
		return nil, err
	}
	t := NewTensor(cv.outShape, nil)
	if tin[0] != nil {
		cv.conv(tin[0].Data, in[1].Data, nil, t.Data)
	}
	if tin[1] != nil {
		cv.conv(in[0].Data, tin[1].Data, nil, t.Data)
	}
	if len(tin) > 2 && tin[2] != nil {
		addBias(t.Data, tin[2].Data, cv.n, cv.m, cv.win.outSize)
	}
	return t, nil
}

func convVJP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
	cv, err := convGeomOf(op, in[0], in[1])
	if err != nil {
		return err
	}
	if gin[0] != nil {
		cv.convT(g.Data, in[1].Data, gin[0].Data)
	}
	if gin[1] != nil {
		cv.convW(in[0].Data, g.Data, gin[1].Data)
	}
	if len(gin) > 2 && gin[2] != nil {
		sumChannels(g.Data, gin[2].Data, cv.n, cv.m, cv.win.outSize)
	}
	return nil
}

// sumChannels adds to gb[m] the sum of g over samples and positions of
// channel m.
func sumChannels(g, gb []float64, n, m, L int) {
	for s := range n {
		for c := range m {
			acc := 0.0
			for _, v := range g[(s*m+c)*L : (s*m+c+1)*L] {
				acc += v
			}
			gb[c] += acc
		}
	}
}

var padModes = map[string]bool{"constant": true, "reflect": true, "edge": true, "wrap": true}

func checkPad(op *onnxio.Op) error {
	if m := op.AttrString("mode", "constant"); !padModes[m] {
		return fmt.Errorf("mode %q is not supported", m)
	}
	return nil
}

// padMap is Pad's gather map: pads from input 1 (opset 11 on) or the
// attribute, over every axis or the axes of input 3; the constant from
// input 2 or the attribute value.
func padMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	var pads []int
	if len(in) > 1 && in[1] != nil {
		pads = intsOf(in[1])
	} else {
		for _, v := range op.AttrInts("pads") {
			pads = append(pads, int(v))
		}
	}
	fill := op.AttrFloat("value", 0)
	if len(in) > 2 && in[2] != nil && in[2].Len() > 0 {
		fill = in[2].Data[0]
	}
	axes := make([]int, r)
	for i := range axes {
		axes[i] = i
	}
	if len(in) > 3 && in[3] != nil {
		axes = intsOf(in[3])
		for i, a := range axes {
			if axes[i], err = normAxis(a, r); err != nil {
				return nil, err
			}
		}
	}
	if len(pads) != 2*len(axes) {
		return nil, fmt.Errorf("%d pads for %d axes", len(pads), len(axes))
	}
	pb, pe := make([]int, r), make([]int, r)
	for i, a := range axes {
		pb[a], pe[a] = pads[i], pads[i+len(axes)]
	}
	mode := op.AttrString("mode", "constant")
	shape := make([]int, r)
	// src[a][o] is the input coordinate read at output coordinate o of
	// axis a, -1 for the constant.
	src := make([][]int, r)
	constant := false
	for a := range r {
		n := x.Shape[a]
		shape[a] = n + pb[a] + pe[a]
		if shape[a] < 0 {
			return nil, fmt.Errorf("pads %s remove more than axis %d's %d elements", plain.List(pads), a, n)
		}
		src[a] = make([]int, shape[a])
		for o := range src[a] {
			i := o - pb[a]
			if i < 0 || i >= n {
				switch {
				case n == 0:
					if mode != "constant" {
						return nil, fmt.Errorf("mode %s pads an empty axis %d", mode, a)
					}
					i = -1
				case mode == "constant":
					i = -1
				case mode == "edge" || (mode == "reflect" && n == 1):
					i = min(max(i, 0), n-1)
				case mode == "reflect":
					p := 2 * (n - 1)
					i = ((i % p) + p) % p
					if i >= n {
						i = p - i
					}
				case mode == "wrap":
					i = ((i % n) + n) % n
				}
			}
			if i < 0 {
				constant = true
			}
			src[a][o] = i
		}
	}
	m := &gatherMap{Shape: shape, Pos: make([]int, ShapeSize(shape)), Fill: fill}
	if constant {
		m.Src = make([]int, len(m.Pos))
	}
	if len(m.Pos) == 0 {
		return m, nil
	}
	st := strides(x.Shape)
	cnt := make([]int, r)
	for k := range m.Pos {
		pos := 0
		for a := range r {
			i := src[a][cnt[a]]
			if i < 0 {
				pos = -1
				break
			}
			pos += i * st[a]
		}
		if pos < 0 {
			m.Src[k] = -1
		} else {
			m.Pos[k] = pos
		}
		for a := r - 1; a >= 0; a-- {
			cnt[a]++
			if cnt[a] < shape[a] {
				break
			}
			cnt[a] = 0
		}
	}
	return m, nil
}

// convTGeomOf describes ConvTranspose, x [N, C, in...] and w [C, M/G,
// kernel...], as the pull-back through x of the Conv from [N, M, out...]
// to [N, C, in...] with weights w: the returned geometry is that Conv's.
func convTGeomOf(op *onnxio.Op, x, w *Tensor) (*convGeom, error) {
	r := x.Rank() - 2
	if r < 1 || r > 3 || w.Rank() != x.Rank() {
		return nil, fmt.Errorf("input shape %s and weight shape %s: want [N, C, spatial...] and [C, M/group, kernel...] over 1 to 3 spatial axes", plain.Shape(x.Shape), plain.Shape(w.Shape))
	}
	g := int(op.AttrInt("group", 1))
	c := x.Shape[1]
	if g < 1 || w.Shape[0] != c || c%g != 0 {
		return nil, fmt.Errorf("input shape %s, weight shape %s and group %d do not match", plain.Shape(x.Shape), plain.Shape(w.Shape), g)
	}
	kernel := w.Shape[2:]
	if ks := op.AttrInts("kernel_shape"); ks != nil {
		for i, k := range ks {
			if i >= len(kernel) || int(k) != kernel[i] {
				return nil, fmt.Errorf("kernel_shape %s differs from the weight's %s", plain.Shape(ks), plain.Shape(kernel))
			}
		}
	}
	strides, err := attrDims(op, "strides", r, 1)
	if err != nil {
		return nil, err
	}
	dil, err := attrDims(op, "dilations", r, 1)
	if err != nil {
		return nil, err
	}
	pads, err := attrDims(op, "pads", 2*r, 0)
	if err != nil {
		return nil, err
	}
	outPad, err := attrDims(op, "output_padding", r, 0)
	if err != nil {
		return nil, err
	}
	var outShape []int
	if os := op.AttrInts("output_shape"); os != nil {
		if len(os) == r+2 {
			os = os[2:]
		}
		if len(os) != r {
			return nil, fmt.Errorf("output_shape %s for %d spatial axes", plain.Shape(os), r)
		}
		for _, v := range os {
			outShape = append(outShape, int(v))
		}
	}
	ap := op.AttrString("auto_pad", "NOTSET")
	win := &window{rank: r}
	for i := range 3 {
		win.in[i], win.k[i], win.out[i], win.stride[i], win.dil[i] = 1, 1, 1, 1, 1
	}
	for i := range r {
		j := 3 - r + i
		n, k, st, d := x.Shape[2+i], kernel[i], strides[i], dil[i]
		full := st*(n-1) + outPad[i] + (k-1)*d + 1
		var o, pb, pe int
		switch {
		case outShape != nil || ap == "SAME_UPPER" || ap == "SAME_LOWER":
			o = n * st
			if outShape != nil {
				o = outShape[i]
			}
			// total is negative when output_shape asks for more than the
			// full output; half of it rounds down, as in ONNX's reference.
			total := full - o
			half := total / 2
			if total < 0 && total%2 != 0 {
				half--
			}
			if ap == "SAME_UPPER" {
				pb, pe = half, total-half
			} else {
				pb, pe = total-half, half
			}
		case ap == "VALID":
			o = full
		default:
			pb, pe = pads[i], pads[i+r]
			o = full - pb - pe
		}
		if o < 1 {
			return nil, fmt.Errorf("output size %d on spatial axis %d", o, i)
		}
		win.in[j], win.k[j], win.out[j], win.stride[j], win.dil[j], win.padB[j], win.padE[j] = o, k, n, st, d, pb, pe
	}
	win.sizes()
	mg := w.Shape[1]
	cv := &convGeom{win: win, n: x.Shape[0], c: mg * g, m: c, g: g, cg: mg, mg: c / g}
	cv.outShape = append([]int{cv.n, cv.c}, win.in[3-r:]...)
	return cv, nil
}

func convTForward(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, w, b, err := convInputs(in, func(w *Tensor) int { return w.Shape[1] * int(op.AttrInt("group", 1)) })
	if err != nil {
		return nil, err
	}
	cv, err := convTGeomOf(op, x, w)
	if err != nil {
		return nil, err
	}
	y := NewTensor(cv.outShape, nil)
	cv.convT(x.Data, w.Data, y.Data)
	if b != nil {
		addBias(y.Data, b.Data, cv.n, cv.c, cv.win.inSize)
	}
	return y, nil
}

// convTJVP: ConvTranspose is bilinear in (x, w) and affine in b.
func convTJVP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
	cv, err := convTGeomOf(op, in[0], in[1])
	if err != nil {
		return nil, err
	}
	t := NewTensor(cv.outShape, nil)
	if tin[0] != nil {
		cv.convT(tin[0].Data, in[1].Data, t.Data)
	}
	if tin[1] != nil {
		cv.convT(in[0].Data, tin[1].Data, t.Data)
	}
	if len(tin) > 2 && tin[2] != nil {
		addBias(t.Data, tin[2].Data, cv.n, cv.c, cv.win.inSize)
	}
	return t, nil
}

func convTVJP(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
	cv, err := convTGeomOf(op, in[0], in[1])
	if err != nil {
		return err
	}
	if gin[0] != nil {
		cv.conv(g.Data, in[1].Data, nil, gin[0].Data)
	}
	if gin[1] != nil {
		cv.convW(g.Data, in[0].Data, gin[1].Data)
	}
	if len(gin) > 2 && gin[2] != nil {
		sumChannels(g.Data, gin[2].Data, cv.n, cv.c, cv.win.inSize)
	}
	return nil
}
