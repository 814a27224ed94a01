package analysis

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// walkPositions lists, per output element, operand j's position as the walk
// gives it.
func walkPositions(w walk, j int) []int {
	pos := make([]int, w.n)
	s := w.inner(j)
	w.rows(func(k, n int, off []int) {
		for i := range n {
			pos[k+i] = off[j] + i*s
		}
	})
	return pos
}

// The walks give every output element the position the per-element maps
// (bcastIndex, stridedPos) give it, whatever axes they merge.
func TestWalkMatchesPositionMaps(t *testing.T) {
	bcast := []struct{ out, in []int }{
		{[]int{256, 17, 64}, []int{64}},
		{[]int{256, 17, 64}, []int{256, 17, 1}},
		{[]int{256, 17, 64}, []int{1, 17, 64}},
		{[]int{256, 17, 64}, []int{256, 17, 64}},
		{[]int{256, 17, 64}, []int{}},
		{[]int{2, 3, 4, 5}, []int{3, 1, 5}},
		{[]int{2, 1, 4}, []int{2, 1, 1}},
		{[]int{4, 1}, []int{1}},
		{[]int{}, []int{}},
		{[]int{3, 0, 2}, []int{2}},
	}
	for _, c := range bcast {
		w := bcastWalk(c.out, c.in)
		got := walkPositions(w, 0)
		want := bcastPos(c.out, c.in)
		if !slices.Equal(got, want) {
			t.Errorf("broadcast %v to %v: walk %v, map %v", c.in, c.out, got, want)
		}
		// Spans cut anywhere, rows included, give the same positions.
		for _, cut := range []int{1, 3, 7, 64, 100, 1000} {
			sp := make([]int, w.n)
			for lo := 0; lo < w.n; lo += cut {
				w.span(lo, lo+cut, func(k, n int, off []int) {
					for i := range n {
						sp[k+i] = off[0] + i*w.inner(0)
					}
				})
			}
			if !slices.Equal(sp, want) {
				t.Errorf("broadcast %v to %v in spans of %d: %v, map %v", c.in, c.out, cut, sp, want)
			}
		}
	}
	strided := []struct {
		shape   []int
		base    int
		strides []int
	}{
		{[]int{3, 256, 4, 17, 16}, 0, []int{64, 17 * 192, 16, 192, 1}}, // the ViT's qkv transpose
		{[]int{256, 4, 16, 17}, 5, []int{1088, 16, 1, 64}},
		{[]int{2, 3}, 7, []int{-3, 1}},
		{[]int{5, 1, 2}, 0, []int{2, 99, 1}},
		{[]int{}, 4, []int{}},
	}
	for _, c := range strided {
		m := stridedMap(c.shape, c.base, c.strides)
		got := walkPositions(m.pieces[0].w, 1)
		want := stridedPos(c.shape, c.base, c.strides)
		if !slices.Equal(got, want) {
			t.Errorf("strided %v base %d strides %v: walk %v, map %v", c.shape, c.base, c.strides, got, want)
		}
		if out := walkPositions(m.pieces[0].w, 0); !slices.Equal(out, bcastPos(c.shape, c.shape)) {
			t.Errorf("strided %v: output positions %v are not in order", c.shape, out)
		}
	}
}

// The binary ops' forward pass and pull-backs through walks equal, bit for
// bit, the loops over position maps they replace: the broadcast sums add
// their terms in the same order.
func TestBinaryWalksMatchPositionMaps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	randT := func(shape ...int) *Tensor {
		x := Zeros(shape...)
		for i := range x.Data {
			x.Data[i] = rng.NormFloat64()
		}
		return x
	}
	shapes := []struct{ a, b []int }{
		{[]int{8, 5, 6}, []int{8, 5, 1}},
		{[]int{8, 5, 6}, []int{6}},
		{[]int{1, 5, 6}, []int{8, 5, 6}},
		{[]int{8, 5, 6}, []int{}},
		{[]int{4, 1, 3}, []int{1, 5, 1}},
		{[]int{7}, []int{7}},
	}
	for _, kind := range []onnxio.OpKind{onnxio.OpAdd, onnxio.OpSub, onnxio.OpMul, onnxio.OpDiv} {
		for _, c := range shapes {
			a, b := randT(c.a...), randT(c.b...)
			net := &onnxio.Network{Values: make([]onnxio.Value, 3)}
			op := &onnxio.Op{Kind: kind, In: []int{0, 1}, Out: 2}
			vals := []*Tensor{a, b, nil}
			y, err := binaryForward(op, vals, freshAlloc)
			if err != nil {
				t.Fatal(err)
			}
			ia, ib := bcastIndex(y.Shape, a.Shape), bcastIndex(y.Shape, b.Shape)
			for k, got := range y.Data {
				u, v := a.Data[bcAt(ia, k)], b.Data[bcAt(ib, k)]
				var want float64
				switch kind {
				case onnxio.OpAdd:
					want = u + v
				case onnxio.OpSub:
					want = u - v
				case onnxio.OpMul:
					want = u * v
				case onnxio.OpDiv:
					want = u / v
				}
				if math.Float64bits(got) != math.Float64bits(want) {
					t.Fatalf("%v %v %v: y[%d] = %v, want %v", kind, c.a, c.b, k, got, want)
				}
			}
			// The pull-back of 2 directions against binaryFactors read
			// through the position maps.
			vals[2] = y
			const p = 2
			g := randT(append([]int{p}, y.Shape...)...)
			cot := make([]*Tensor, 3)
			rel := []bool{true, true, true}
			if err := vjpOp(net, op, vals, cot, rel, true, false, g, p, matmul, nil); err != nil {
				t.Fatal(err)
			}
			ga, gb, ca, cb := binaryFactors(kind, a, b, y)
			n := y.Len()
			for side, s := range []struct {
				t   *Tensor
				idx []int
				f   []float64
				c   float64
			}{{a, ia, ga, ca}, {b, ib, gb, cb}} {
				m := s.t.Len()
				want := make([]float64, p*m)
				for q := range p {
					for k, v := range g.Data[q*n : (q+1)*n] {
						if s.f == nil {
							want[q*m+bcAt(s.idx, k)] += s.c * v
						} else {
							want[q*m+bcAt(s.idx, k)] += s.f[k] * v
						}
					}
				}
				for i, w := range want {
					if got := cot[side].Data[i]; math.Float64bits(got) != math.Float64bits(w) {
						t.Fatalf("%v %v %v: operand %d cotangent[%d] = %v, want %v", kind, c.a, c.b, side, i, got, w)
					}
				}
			}
		}
	}
}

// Concat's pieces place every input where the per-element map did.
func TestConcatPieces(t *testing.T) {
	in := []*Tensor{Zeros(2, 1, 3), Zeros(2, 4, 3), Zeros(2, 2, 3)}
	v := 0.0
	for _, x := range in {
		for i := range x.Data {
			v++
			x.Data[i] = v
		}
	}
	op := &onnxio.Op{Type: "Concat", Attrs: map[string]onnxio.AttrValue{"axis": {Kind: onnxio.AttrIsInt, Int: 1}}}
	m, err := concatMap(op, in)
	if err != nil {
		t.Fatal(err)
	}
	out := m.apply(in, 0)
	if !slices.Equal(out.Shape, []int{2, 7, 3}) {
		t.Fatalf("shape %v", out.Shape)
	}
	var want []float64
	for o := range 2 {
		for _, x := range in {
			blk := x.Len() / 2
			want = append(want, x.Data[o*blk:(o+1)*blk]...)
		}
	}
	if !slices.Equal(out.Data, want) {
		t.Fatalf("concat %v, want %v", out.Data, want)
	}
}
