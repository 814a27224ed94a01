package analysis

// A walk visits an output of some shape in row-major order, row by row,
// and gives each operand's position at the start of every row: broadcast
// operands, transposes and strided slices are read through strides
// rather than through a position per output element. A position map is as
// large as the output; the ViT's reverse pass built one per op and per
// batch, and building and reading them was a large part of its time.
//
// The output's axes are merged wherever every operand allows (each
// operand's stride along the outer axis is its stride along the inner one
// times the inner length), so that a row is as long as possible: a bias
// broadcast over [batch, tokens, width] is one run of width elements per
// row, a per-row statistic of shape [batch, tokens, 1] one constant run.
// Every walk visits elements in increasing output order, so sums into an
// operand (the pull-back of a broadcast) add their terms in the same order
// as a loop over a position map would.
type walk struct {
	dims []int   // merged output axes, outermost first (at least one)
	st   [][]int // per operand, its stride along each merged axis
	base []int   // per operand, its position at output element 0
	n    int     // output elements
}

// newWalk merges the axes of shape (operand j reads element base[j] +
// Σ idx[i]·st[j][i] at output coordinates idx). st[j] has len(shape)
// entries; base may be nil (all 0).
func newWalk(shape []int, base []int, st ...[]int) walk {
	w := walk{n: ShapeSize(shape), base: make([]int, len(st)), st: make([][]int, len(st))}
	copy(w.base, base)
	for i, d := range shape {
		if d == 1 {
			continue // any stride: its coordinate is always 0
		}
		r := len(w.dims)
		merge := r > 0
		for j := range st {
			if merge && w.st[j][r-1] != st[j][i]*d {
				merge = false
			}
		}
		if merge {
			w.dims[r-1] *= d
			for j := range st {
				w.st[j][r-1] = st[j][i]
			}
			continue
		}
		w.dims = append(w.dims, d)
		for j := range st {
			w.st[j] = append(w.st[j], st[j][i])
		}
	}
	if len(w.dims) == 0 {
		w.dims = []int{1}
		for j := range st {
			w.st[j] = []int{0}
		}
	}
	return w
}

// bcastStrides is the stride of an operand of shape in along each axis of
// the broadcast shape out (0 where it is broadcast). in must broadcast to
// out.
func bcastStrides(out, in []int) []int {
	r := len(out)
	st := make([]int, r)
	s := 1
	for ax, j := r-1, len(in)-1; ax >= 0 && j >= 0; ax, j = ax-1, j-1 {
		if in[j] != 1 {
			st[ax] = s
		}
		s *= in[j]
	}
	return st
}

// bcastWalk walks the broadcast shape out reading operands of the shapes
// ins.
func bcastWalk(out []int, ins ...[]int) walk {
	st := make([][]int, len(ins))
	for j, in := range ins {
		st[j] = bcastStrides(out, in)
	}
	return newWalk(out, nil, st...)
}

// inner is operand j's stride within a row.
func (w *walk) inner(j int) int { return w.st[j][len(w.dims)-1] }

// rows calls f for every row: k is the output position of its first
// element, n its length, off the operands' positions there (f must not
// keep off). Nothing is called for an empty output.
func (w *walk) rows(f func(k, n int, off []int)) {
	if w.n == 0 {
		return
	}
	r := len(w.dims)
	last := w.dims[r-1]
	off := append([]int(nil), w.base...)
	var cnt []int
	if r > 1 {
		cnt = make([]int, r-1)
	}
	for k := 0; k < w.n; k += last {
		f(k, last, off)
		w.step(cnt, off)
	}
}

// step moves the odometer cnt of the outer axes, and the operands'
// offsets off, to the next row.
func (w *walk) step(cnt, off []int) {
	for ax := len(w.dims) - 2; ax >= 0; ax-- {
		cnt[ax]++
		for j := range off {
			off[j] += w.st[j][ax]
		}
		if cnt[ax] < w.dims[ax] {
			return
		}
		for j := range off {
			off[j] -= w.st[j][ax] * w.dims[ax]
		}
		cnt[ax] = 0
	}
}

// span is rows restricted to the output elements lo .. hi-1: the first
// and last rows may be partial (k, n and off then describe the part).
// Disjoint spans cover disjoint output elements, so they may run at once.
func (w *walk) span(lo, hi int, f func(k, n int, off []int)) {
	hi = min(hi, w.n)
	if lo >= hi {
		return
	}
	r := len(w.dims)
	last := w.dims[r-1]
	row, i0 := lo/last, lo%last
	// The coordinates of row, outer axes by the odometer's order.
	off := append([]int(nil), w.base...)
	var cnt []int
	if r > 1 {
		cnt = make([]int, r-1)
	}
	for ax, q := r-2, row; ax >= 0; ax-- {
		cnt[ax] = q % w.dims[ax]
		q /= w.dims[ax]
		for j := range off {
			off[j] += cnt[ax] * w.st[j][ax]
		}
	}
	part := make([]int, len(off))
	for k := lo; k < hi; {
		n := min(last-i0, hi-k)
		for j := range off {
			part[j] = off[j] + i0*w.st[j][r-1]
		}
		f(k, n, part)
		k += n
		i0 = 0
		w.step(cnt, off)
	}
}

// gatherRow copies src[off+i*s] to dst[i].
func gatherRow(dst, src []float64, off, s int) {
	switch s {
	case 1:
		copy(dst, src[off:off+len(dst)])
	case 0:
		v := src[off]
		for i := range dst {
			dst[i] = v
		}
	default:
		for i := range dst {
			dst[i] = src[off+i*s]
		}
	}
}

// scatterAddRow adds g[i] to dst[off+i*s], in order of i.
func scatterAddRow(dst, g []float64, off, s int) {
	switch s {
	case 1:
		d := dst[off : off+len(g)]
		for i, v := range g {
			d[i] += v
		}
	case 0:
		acc := dst[off]
		for _, v := range g {
			acc += v
		}
		dst[off] = acc
	default:
		for i, v := range g {
			dst[off+i*s] += v
		}
	}
}
