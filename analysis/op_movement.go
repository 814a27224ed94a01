package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"math"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
)

// Data movement: ops whose output elements are copies of input elements.
// The reshaping ones (Reshape, Squeeze, Unsqueeze, Flatten, Identity,
// Dropout) keep the data's order and are aliases; the others are gather
// maps (registry.go), which give their derivatives for free.

func init() {
	register("Reshape", aliasKernel(reshapeOutShape, nil))
	register("Squeeze", aliasKernel(squeezeOutShape, nil))
	register("Unsqueeze", aliasKernel(unsqueezeOutShape, nil))
	register("Flatten", aliasKernel(flattenOutShape, nil))
	register("Identity", aliasKernel(sameOutShape, nil))
	register("Dropout", aliasKernel(sameOutShape, checkDropout))
	register("Transpose", gatherKernel(transposeMap, nil))
	register("Concat", gatherKernel(concatMap, nil))
	register("Split", gatherKernel(splitMap, nil))
	register("Slice", gatherKernel(sliceMap, nil))
	register("Gather", gatherKernel(gatherOpMap, nil))
	register("GatherElements", gatherKernel(gatherElementsMap, nil))
	register("Expand", gatherKernel(expandMap, nil))
	register("Tile", gatherKernel(tileMap, nil))
	register("Where", gatherKernel(whereMap, nil))
	register("Trilu", gatherKernel(triluMap, nil))
	register("CumSum", cumSumKernel())
	register("ScatterND", gatherKernel(scatterNDMap, checkScatter))
	register("ScatterElements", gatherKernel(scatterElementsMap, checkScatter))
	register("Scatter", gatherKernel(scatterElementsMap, checkScatter)) // opsets 9-10: ScatterElements under its old name
}

// aliasKernel is the kernel of an op whose output is its first input's
// data, in order, under the shape shapeOf computes.
func aliasKernel(shapeOf func(op *onnxio.Op, in []*Tensor) ([]int, error), check func(*onnxio.Op) error) *Kernel {
	return &Kernel{
		Check: check,
		ForwardAlloc: func(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
			x, err := need(in, 0)
			if err != nil {
				return nil, err
			}
			s, err := shapeOf(op, in)
			if err != nil {
				return nil, err
			}
			if ShapeSize(s) != x.Len() {
				return nil, fmt.Errorf("shape %s for %d values of shape %s", plain.Shape(s), x.Len(), plain.Shape(x.Shape))
			}
			y := alloc(s)
			copy(y.Data, x.Data)
			return y, nil
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

func sameOutShape(_ *onnxio.Op, in []*Tensor) ([]int, error) { return in[0].Shape, nil }

func checkDropout(op *onnxio.Op) error {
	if op.OutIndex != 0 {
		return fmt.Errorf("its mask output is used")
	}
	return nil
}

// intsAt reads an integer input (shape, axes, indices) as ints, with
// values beyond the int range (INT64_MAX ends, which float64 holds as
// 2^63) saturated rather than wrapped.
func intsAt(t *Tensor) []int {
	v := make([]int, len(t.Data))
	for i, f := range t.Data {
		v[i] = satInt(f)
	}
	return v
}

func satInt(f float64) int {
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int(f)
}

func ints64(v []int64) []int {
	if v == nil {
		return nil
	}
	r := make([]int, len(v))
	for i, x := range v {
		r[i] = int(x)
	}
	return r
}

// axesArg reads the axes of an op from input k when present, else from
// the "axes" attribute (the form before opset 13); nil when neither.
func axesArg(op *onnxio.Op, in []*Tensor, k string, pos int) []int {
	if pos < len(in) && in[pos] != nil {
		return intsAt(in[pos])
	}
	if a := op.AttrInts(k); a != nil {
		return ints64(a)
	}
	return nil
}

// reshapeTarget resolves a Reshape target against the input's shape: 0
// copies the input's dimension (unless allowZero), -1 is inferred.
func reshapeTarget(inShape, spec []int, allowZero bool) ([]int, error) {
	out := make([]int, len(spec))
	infer, known := -1, 1
	for i, d := range spec {
		switch {
		case d == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("shape %s has two -1", plain.List(spec))
			}
			infer = i
			continue
		case d == 0 && !allowZero:
			if i >= len(inShape) {
				return nil, fmt.Errorf("shape %s copies dimension %d of a rank-%d input", plain.List(spec), i, len(inShape))
			}
			d = inShape[i]
		case d < 0:
			return nil, fmt.Errorf("shape %s has a negative dimension", plain.List(spec))
		}
		out[i] = d
		known *= d
	}
	n := ShapeSize(inShape)
	if infer >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("cannot reshape %s to %s", plain.Shape(inShape), plain.List(spec))
		}
		out[infer] = n / known
	} else if known != n {
		return nil, fmt.Errorf("cannot reshape %s to %s", plain.Shape(inShape), plain.List(spec))
	}
	return out, nil
}

func reshapeOutShape(op *onnxio.Op, in []*Tensor) ([]int, error) {
	s, err := need(in, 1)
	if err != nil {
		return nil, err
	}
	return reshapeTarget(in[0].Shape, intsAt(s), op.AttrInt("allowzero", 0) != 0)
}

func squeezeOutShape(op *onnxio.Op, in []*Tensor) ([]int, error) {
	shape := in[0].Shape
	axes := axesArg(op, in, "axes", 1)
	drop := make([]bool, len(shape))
	if axes == nil {
		for i, d := range shape {
			drop[i] = d == 1
		}
	}
	for _, a := range axes {
		a, err := normAxis(a, len(shape))
		if err != nil {
			return nil, err
		}
		if shape[a] != 1 {
			return nil, fmt.Errorf("cannot squeeze axis %d of shape %s", a, plain.Shape(shape))
		}
		drop[a] = true
	}
	var out []int
	for i, d := range shape {
		if !drop[i] {
			out = append(out, d)
		}
	}
	return out, nil
}

func unsqueezeOutShape(op *onnxio.Op, in []*Tensor) ([]int, error) {
	shape := in[0].Shape
	axes := axesArg(op, in, "axes", 1)
	r := len(shape) + len(axes)
	ins := make([]bool, r)
	for _, a := range axes {
		a, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		if ins[a] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		ins[a] = true
	}
	out := make([]int, 0, r)
	j := 0
	for i := range r {
		if ins[i] {
			out = append(out, 1)
		} else {
			out = append(out, shape[j])
			j++
		}
	}
	return out, nil
}

func flattenOutShape(op *onnxio.Op, in []*Tensor) ([]int, error) {
	shape := in[0].Shape
	a := int(op.AttrInt("axis", 1))
	if a < 0 {
		a += len(shape)
	}
	if a < 0 || a > len(shape) {
		return nil, fmt.Errorf("axis %d out of range for rank %d", op.AttrInt("axis", 1), len(shape))
	}
	return []int{ShapeSize(shape[:a]), ShapeSize(shape[a:])}, nil
}

// stridedPos enumerates shape in row-major order and gives each element
// base + Σ idx[i]·st[i]: the element positions of a strided view.
func stridedPos(shape []int, base int, st []int) []int {
	n := ShapeSize(shape)
	pos := make([]int, n)
	if n == 0 {
		return pos
	}
	r := len(shape)
	if r == 0 {
		pos[0] = base
		return pos
	}
	cnt := make([]int, r)
	off := base
	last, lst := shape[r-1], st[r-1]
	for k := 0; k < n; k += last {
		// The innermost axis in one run, the carries for the others.
		p := pos[k : k+last]
		for j := range p {
			p[j] = off + j*lst
		}
		for ax := r - 2; ax >= 0; ax-- {
			cnt[ax]++
			off += st[ax]
			if cnt[ax] < shape[ax] {
				break
			}
			off -= st[ax] * shape[ax]
			cnt[ax] = 0
		}
	}
	return pos
}

func transposeMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	perm := ints64(op.AttrInts("perm"))
	if perm == nil {
		perm = make([]int, r)
		for i := range perm {
			perm[i] = r - 1 - i
		}
	}
	if len(perm) != r {
		return nil, fmt.Errorf("perm %s for rank %d", plain.List(perm), r)
	}
	seen := make([]bool, r)
	xs := strides(x.Shape)
	shape, st := make([]int, r), make([]int, r)
	for i, p := range perm {
		if p < 0 || p >= r || seen[p] {
			return nil, fmt.Errorf("perm %s is not a permutation", plain.List(perm))
		}
		seen[p] = true
		shape[i], st[i] = x.Shape[p], xs[p]
	}
	return stridedMap(shape, 0, st), nil
}

func concatMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	var first *Tensor
	for _, t := range in {
		if t != nil {
			first = t
			break
		}
	}
	if first == nil {
		return nil, fmt.Errorf("no inputs")
	}
	r := first.Rank()
	axis, err := normAxis(int(op.AttrInt("axis", 0)), r)
	if err != nil {
		return nil, err
	}
	shape := slices.Clone(first.Shape)
	shape[axis] = 0
	for k, t := range in {
		if t == nil {
			return nil, fmt.Errorf("input %d: %w", k, errNoInput)
		}
		if t.Rank() != r {
			return nil, fmt.Errorf("input %d of rank %d, input 0 of rank %d", k, t.Rank(), r)
		}
		for i, d := range t.Shape {
			if i != axis && d != first.Shape[i] {
				return nil, fmt.Errorf("input %d of shape %s does not match %s off axis %d", k, plain.Shape(t.Shape), plain.Shape(first.Shape), axis)
			}
		}
		shape[axis] += t.Shape[axis]
	}
	// Input k fills, in every outer block, the run of its own block's
	// length after those of the inputs before it.
	outer, total := ShapeSize(shape[:axis]), ShapeSize(shape[axis:])
	m := &gatherMap{Shape: shape}
	start := 0
	for k, t := range in {
		blk := ShapeSize(t.Shape[axis:])
		m.pieces = append(m.pieces, piece{src: k, w: newWalk([]int{outer, blk}, []int{start, 0}, []int{total, 1}, []int{blk, 1})})
		start += blk
	}
	return m, nil
}

// splitSizes are the sizes of a Split's parts along an axis of length d:
// the split input (opset 13+) or attribute, else num_outputs parts
// (opset 18: ceil(d/n) each, the last smaller), else equal parts, one per
// output of the node.
func splitSizes(op *onnxio.Op, in []*Tensor, d int) ([]int, error) {
	var sizes []int
	switch {
	case len(in) > 1 && in[1] != nil:
		sizes = intsAt(in[1])
	case op.HasAttr("split"):
		sizes = ints64(op.AttrInts("split"))
	default:
		n := int(op.AttrInt("num_outputs", int64(op.Outputs)))
		if n <= 0 {
			return nil, fmt.Errorf("split into %d parts", n)
		}
		if !op.HasAttr("num_outputs") && d%n != 0 {
			return nil, fmt.Errorf("length %d does not split into %d equal parts", d, n)
		}
		each := (d + n - 1) / n
		for i := range n {
			sizes = append(sizes, max(0, min(each, d-i*each)))
		}
	}
	sum := 0
	for _, s := range sizes {
		if s < 0 {
			return nil, fmt.Errorf("negative split %s", plain.List(sizes))
		}
		sum += s
	}
	if sum != d {
		return nil, fmt.Errorf("split %s does not add up to %d", plain.List(sizes), d)
	}
	return sizes, nil
}

func splitMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	axis, err := normAxis(int(op.AttrInt("axis", 0)), x.Rank())
	if err != nil {
		return nil, err
	}
	sizes, err := splitSizes(op, in, x.Shape[axis])
	if err != nil {
		return nil, err
	}
	if op.OutIndex >= len(sizes) {
		return nil, fmt.Errorf("output %d of %d parts", op.OutIndex, len(sizes))
	}
	start := 0
	for _, s := range sizes[:op.OutIndex] {
		start += s
	}
	xs := strides(x.Shape)
	shape := slices.Clone(x.Shape)
	shape[axis] = sizes[op.OutIndex]
	return stridedMap(shape, start*xs[axis], xs), nil
}

// sliceMap: starts, ends, axes and steps are inputs from opset 10,
// attributes before (no steps then).
func sliceMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	var starts, ends, axes, steps []int
	if len(in) > 1 {
		if in[1] == nil || len(in) < 3 || in[2] == nil {
			return nil, fmt.Errorf("starts and ends: %w", errNoInput)
		}
		starts, ends = intsAt(in[1]), intsAt(in[2])
		if len(in) > 3 && in[3] != nil {
			axes = intsAt(in[3])
		}
		if len(in) > 4 && in[4] != nil {
			steps = intsAt(in[4])
		}
	} else {
		starts, ends, axes = ints64(op.AttrInts("starts")), ints64(op.AttrInts("ends")), ints64(op.AttrInts("axes"))
	}
	if len(ends) != len(starts) || (axes != nil && len(axes) != len(starts)) || (steps != nil && len(steps) != len(starts)) {
		return nil, fmt.Errorf("starts %s, ends %s, axes %s and steps %s differ in length", plain.List(starts), plain.List(ends), plain.List(axes), plain.List(steps))
	}
	r := x.Rank()
	xs := strides(x.Shape)
	shape := slices.Clone(x.Shape)
	st := slices.Clone(xs)
	base := 0
	done := make([]bool, r)
	for i := range starts {
		a := i
		if axes != nil {
			if a, err = normAxis(axes[i], r); err != nil {
				return nil, err
			}
		}
		if done[a] {
			return nil, fmt.Errorf("axis %d sliced twice", a)
		}
		done[a] = true
		step := 1
		if steps != nil {
			step = steps[i]
		}
		if step == 0 {
			return nil, fmt.Errorf("step 0")
		}
		d := x.Shape[a]
		s, e := sliceBound(starts[i], d), sliceBound(ends[i], d)
		var n int
		if step > 0 {
			s, e = min(max(s, 0), d), min(max(e, 0), d)
			n = max(0, (e-s+step-1)/step)
		} else {
			s, e = min(max(s, 0), d-1), min(max(e, -1), d-1)
			n = max(0, (s-e-step-1)/(-step))
		}
		shape[a] = n
		st[a] = step * xs[a]
		if n > 0 {
			base += s * xs[a]
		}
	}
	return stridedMap(shape, base, st), nil
}

// sliceBound makes a negative start or end count from the end, without
// overflowing on INT64_MIN/MAX.
func sliceBound(v, d int) int {
	switch {
	case v < -(1 << 40):
		return -1 << 40
	case v > 1<<40:
		return 1 << 40
	case v < 0:
		return v + d
	}
	return v
}

func gatherOpMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, idx, err := need2(in)
	if err != nil {
		return nil, err
	}
	axis, err := normAxis(int(op.AttrInt("axis", 0)), x.Rank())
	if err != nil {
		return nil, err
	}
	d := x.Shape[axis]
	outer, inner := ShapeSize(x.Shape[:axis]), ShapeSize(x.Shape[axis+1:])
	shape := append(append(slices.Clone(x.Shape[:axis]), idx.Shape...), x.Shape[axis+1:]...)
	if m, ok := gatherRange(x, idx, axis, shape); ok {
		return m, nil
	}
	pos := make([]int, 0, ShapeSize(shape))
	for o := range outer {
		for _, f := range idx.Data {
			j := int(f)
			if j < 0 {
				j += d
			}
			if j < 0 || j >= d {
				return nil, fmt.Errorf("index %v out of range for axis %d of length %d", f, axis, d)
			}
			b := (o*d + j) * inner
			for k := range inner {
				pos = append(pos, b+k)
			}
		}
	}
	return &gatherMap{Shape: shape, Pos: pos}, nil
}

// gatherRange is the gather map of a Gather whose indices (a scalar or a
// vector) are consecutive, a strided view of the data (a ViT picks its
// query, key and value out of one tensor so); ok is false otherwise.
func gatherRange(x, idx *Tensor, axis int, shape []int) (m *gatherMap, ok bool) {
	if idx.Rank() > 1 || idx.Len() == 0 {
		return nil, false
	}
	d := x.Shape[axis]
	j0 := 0
	for i, f := range idx.Data {
		j := int(f)
		if j < 0 {
			j += d
		}
		if j < 0 || j >= d {
			return nil, false // the caller's loop says which
		}
		if i == 0 {
			j0 = j
		} else if j != j0+i {
			return nil, false
		}
	}
	xs := strides(x.Shape)
	st := slices.Clone(xs)
	if idx.Rank() == 0 {
		st = slices.Delete(st, axis, axis+1)
	}
	return stridedMap(shape, j0*xs[axis], st), true
}

func gatherElementsMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, idx, err := need2(in)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	axis, err := normAxis(int(op.AttrInt("axis", 0)), r)
	if err != nil {
		return nil, err
	}
	if idx.Rank() != r {
		return nil, fmt.Errorf("indices of rank %d for data of rank %d", idx.Rank(), r)
	}
	xs := strides(x.Shape)
	// The position of the element with the index's coordinates, the axis
	// coordinate then replaced by the index's value.
	base := stridedPos(idx.Shape, 0, xs)
	is := strides(idx.Shape)
	d := x.Shape[axis]
	pos := make([]int, len(base))
	for k, b := range base {
		c := (k / is[axis]) % idx.Shape[axis]
		j := int(idx.Data[k])
		if j < 0 {
			j += d
		}
		if j < 0 || j >= d {
			return nil, fmt.Errorf("index %v out of range for axis %d of length %d", idx.Data[k], axis, d)
		}
		pos[k] = b + (j-c)*xs[axis]
	}
	return &gatherMap{Shape: slices.Clone(idx.Shape), Pos: pos}, nil
}

// bcastPos is bcastIndex with the identity spelled out.
func bcastPos(out, in []int) []int {
	if p := bcastIndex(out, in); p != nil {
		return p
	}
	p := make([]int, ShapeSize(out))
	for i := range p {
		p[i] = i
	}
	return p
}

func expandMap(_ *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, s, err := need2(in)
	if err != nil {
		return nil, err
	}
	shape, err := BroadcastShape(x.Shape, intsAt(s))
	if err != nil {
		return nil, err
	}
	return stridedMap(shape, 0, bcastStrides(shape, x.Shape)), nil
}

func tileMap(_ *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, rt, err := need2(in)
	if err != nil {
		return nil, err
	}
	reps := intsAt(rt)
	r := x.Rank()
	if len(reps) != r {
		return nil, fmt.Errorf("%d repeats for rank %d", len(reps), r)
	}
	shape := make([]int, r)
	for i, k := range reps {
		if k < 0 {
			return nil, fmt.Errorf("negative repeats %s", plain.List(reps))
		}
		shape[i] = x.Shape[i] * k
	}
	xs := strides(x.Shape)
	n := ShapeSize(shape)
	pos := make([]int, n)
	cnt := make([]int, r)
	for k := range pos {
		p := 0
		for ax, c := range cnt {
			p += (c % x.Shape[ax]) * xs[ax]
		}
		pos[k] = p
		for ax := r - 1; ax >= 0; ax-- {
			cnt[ax]++
			if cnt[ax] < shape[ax] {
				break
			}
			cnt[ax] = 0
		}
	}
	return &gatherMap{Shape: shape, Pos: pos}, nil
}

// whereMap reads the condition: X where it holds, Y elsewhere.
func whereMap(_ *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	for k := range 3 {
		if _, err := need(in, k); err != nil {
			return nil, err
		}
	}
	shape, err := BroadcastShape(in[0].Shape, in[1].Shape)
	if err != nil {
		return nil, err
	}
	if shape, err = BroadcastShape(shape, in[2].Shape); err != nil {
		return nil, err
	}
	c, a, b := bcastIndex(shape, in[0].Shape), bcastIndex(shape, in[1].Shape), bcastIndex(shape, in[2].Shape)
	n := ShapeSize(shape)
	m := &gatherMap{Shape: shape, Src: make([]int, n), Pos: make([]int, n)}
	for k := range n {
		if in[0].Data[at(c, k)] != 0 {
			m.Src[k], m.Pos[k] = 1, at(a, k)
		} else {
			m.Src[k], m.Pos[k] = 2, at(b, k)
		}
	}
	return m, nil
}

// triluMap keeps the upper (upper=1) or lower triangle of the last two
// axes, from diagonal k (input 1, default 0), and zeroes the rest.
func triluMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	if r < 2 {
		return nil, fmt.Errorf("rank %d, want at least 2", r)
	}
	k := 0
	if len(in) > 1 && in[1] != nil {
		if in[1].Len() != 1 {
			return nil, fmt.Errorf("k of %d values", in[1].Len())
		}
		k = satInt(in[1].Data[0])
	}
	upper := op.AttrInt("upper", 1) != 0
	rows, cols := x.Shape[r-2], x.Shape[r-1]
	n := x.Len()
	m := &gatherMap{Shape: slices.Clone(x.Shape), Src: make([]int, n), Pos: make([]int, n)}
	for p := range n {
		i, j := (p/cols)%rows, p%cols
		keep := j-i >= k
		if !upper {
			keep = j-i <= k
		}
		m.Pos[p] = p
		if !keep {
			m.Src[p] = -1
		}
	}
	return m, nil
}

// cumSumKernel: CumSum is linear; its transpose is the cumulative sum in
// the other direction with the same exclusivity.
func cumSumKernel() *Kernel {
	run := func(op *onnxio.Op, in []*Tensor, x *Tensor, flip bool) (*Tensor, error) {
		at, err := need(in, 1)
		if err != nil {
			return nil, err
		}
		if at.Len() != 1 {
			return nil, fmt.Errorf("axis of %d values", at.Len())
		}
		axis, err := normAxis(satInt(at.Data[0]), x.Rank())
		if err != nil {
			return nil, err
		}
		excl := op.AttrInt("exclusive", 0) != 0
		rev := (op.AttrInt("reverse", 0) != 0) != flip
		d := x.Shape[axis]
		outer, inner := ShapeSize(x.Shape[:axis]), ShapeSize(x.Shape[axis+1:])
		out := NewTensor(x.Shape, nil)
		for o := range outer {
			for k := range inner {
				s := 0.0
				for t := range d {
					j := t
					if rev {
						j = d - 1 - t
					}
					p := (o*d+j)*inner + k
					if excl {
						out.Data[p] = s
						s += x.Data[p]
					} else {
						s += x.Data[p]
						out.Data[p] = s
					}
				}
			}
		}
		return out, nil
	}
	return &Kernel{
		ForwardAlloc: func(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
			x, err := need(in, 0)
			if err != nil {
				return nil, err
			}
			return run(op, in, x, false)
		},
		JVP: func(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, tin []*Tensor) (*Tensor, error) {
			if tin[0] == nil {
				return nil, nil
			}
			return run(op, in, tin[0], false)
		},
		VJP: func(op *onnxio.Op, in []*Tensor, _ *Tensor, _ any, g *Tensor, gin []*Tensor) error {
			if gin[0] == nil {
				return nil
			}
			t, err := run(op, in, g, true)
			if err != nil {
				return err
			}
			addTo(gin[0].Data, t.Data)
			return nil
		},
	}
}

// checkScatter accepts the scatters that overwrite (reduction "none", the
// only form before opset 16): they are gather maps. The reducing forms
// (add, mul, max, min) are not.
func checkScatter(op *onnxio.Op) error {
	if r := op.AttrString("reduction", "none"); r != "none" {
		return fmt.Errorf("reduction %q is not supported", r)
	}
	return nil
}

// copyMap is the gather map of a copy of input 0 of the given shape, which
// a scatter then overwrites in part.
func copyMap(shape []int) *gatherMap {
	n := ShapeSize(shape)
	m := &gatherMap{Shape: slices.Clone(shape), Src: make([]int, n), Pos: make([]int, n)}
	for p := range n {
		m.Pos[p] = p
	}
	return m
}

// scatterNDMap: the output is the data (input 0) with the slices that the
// index tuples (input 1, [..., k]) address replaced by the updates (input
// 2); a later tuple wins over an earlier one with the same address, as
// in a sequential loop. Torch exports in-place slice assignment so
// (Swin's shifted-window mask).
func scatterNDMap(_ *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, idx, u, err := need3(in)
	if err != nil {
		return nil, err
	}
	if idx.Rank() == 0 {
		return nil, fmt.Errorf("indices of rank 0")
	}
	k := idx.Shape[idx.Rank()-1]
	if k > x.Rank() {
		return nil, fmt.Errorf("index tuples of %d elements for data of rank %d", k, x.Rank())
	}
	tuples := ShapeSize(idx.Shape[:idx.Rank()-1])
	inner := ShapeSize(x.Shape[k:])
	if want := append(slices.Clone(idx.Shape[:idx.Rank()-1]), x.Shape[k:]...); !slices.Equal(u.Shape, want) {
		return nil, fmt.Errorf("updates of shape %s, want %s", plain.Shape(u.Shape), plain.Shape(want))
	}
	m := copyMap(x.Shape)
	xs := strides(x.Shape)
	for j := range tuples {
		base := 0
		for a := range k {
			v := satInt(idx.Data[j*k+a])
			d := x.Shape[a]
			if v < 0 {
				v += d
			}
			if v < 0 || v >= d {
				return nil, fmt.Errorf("index %v out of range for axis %d of length %d", idx.Data[j*k+a], a, d)
			}
			base += v * xs[a]
		}
		for t := range inner {
			m.Src[base+t], m.Pos[base+t] = 2, j*inner+t
		}
	}
	return m, nil
}

// scatterElementsMap: the output is the data (input 0) with, for every
// position of the indices (input 1, the data's rank), the element at that
// position with the axis coordinate replaced by the index set to the
// update at that position (input 2, the indices' shape).
func scatterElementsMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, idx, u, err := need3(in)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	axis, err := normAxis(int(op.AttrInt("axis", 0)), r)
	if err != nil {
		return nil, err
	}
	if idx.Rank() != r || !slices.Equal(u.Shape, idx.Shape) {
		return nil, fmt.Errorf("indices of shape %s and updates of shape %s for data of shape %s", plain.Shape(idx.Shape), plain.Shape(u.Shape), plain.Shape(x.Shape))
	}
	m := copyMap(x.Shape)
	xs := strides(x.Shape)
	base := stridedPos(idx.Shape, 0, xs)
	is := strides(idx.Shape)
	d := x.Shape[axis]
	for q, b := range base {
		c := (q / is[axis]) % idx.Shape[axis]
		j := satInt(idx.Data[q])
		if j < 0 {
			j += d
		}
		if j < 0 || j >= d {
			return nil, fmt.Errorf("index %v out of range for axis %d of length %d", idx.Data[q], axis, d)
		}
		t := b + (j-c)*xs[axis]
		m.Src[t], m.Pos[t] = 2, q
	}
	return m, nil
}
