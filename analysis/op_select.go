package analysis

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/ecprune/ecprune/onnxio"
)

// Selection and tests on values that exporters emit after a model's
// output layer or in routing: TopK (its values are copies of input
// elements, so they carry a derivative; its indices do not), IsNaN, IsInf
// and NonZero (integer or boolean outputs, no derivative). A layer whose
// every path to the outputs ends in one of these uses its local objective
// (local.go).

func init() {
	topk := gatherKernel(topKMap, checkTopK)
	values := topk.ForwardAlloc
	topk.ForwardAlloc = func(op *onnxio.Op, in []*Tensor, alloc allocFunc) (*Tensor, error) {
		if op.OutIndex == 1 {
			_, idx, err := topKSelect(op, in)
			return idx, err
		}
		return values(op, in, alloc)
	}
	register("TopK", topk)
	register("IsNaN", &Kernel{Forward: func(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
		return mapBool(in, math.IsNaN)
	}})
	register("IsInf", &Kernel{Forward: func(op *onnxio.Op, in []*Tensor) (*Tensor, error) {
		neg, pos := op.AttrInt("detect_negative", 1) != 0, op.AttrInt("detect_positive", 1) != 0
		return mapBool(in, func(v float64) bool { return neg && math.IsInf(v, -1) || pos && math.IsInf(v, 1) })
	}})
	register("NonZero", &Kernel{Forward: nonZeroForward})
}

func mapBool(in []*Tensor, f func(float64) bool) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	out := NewTensor(x.Shape, nil)
	for i, v := range x.Data {
		out.Data[i] = b2f(f(v))
	}
	return out, nil
}

func checkTopK(op *onnxio.Op) error {
	if op.Outputs > 2 {
		return fmt.Errorf("TopK with %d outputs", op.Outputs)
	}
	return nil
}

// topKSelect picks the k largest (or smallest) elements along the axis:
// the gather map of the values and the indices tensor. Equal values keep
// their order (the lower index first), as ONNX specifies; the output is
// always sorted.
func topKSelect(op *onnxio.Op, in []*Tensor) (*gatherMap, *Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, nil, err
	}
	if x.Rank() == 0 {
		return nil, nil, fmt.Errorf("TopK of a scalar")
	}
	k := int(op.AttrInt("k", -1))
	if len(in) > 1 && in[1] != nil {
		if in[1].Len() != 1 {
			return nil, nil, fmt.Errorf("K has %d values, want 1", in[1].Len())
		}
		k = int(in[1].Data[0])
	}
	axis, err := normAxis(int(op.AttrInt("axis", -1)), x.Rank())
	if err != nil {
		return nil, nil, err
	}
	d := x.Shape[axis]
	if k < 0 || k > d {
		return nil, nil, fmt.Errorf("K = %d outside [0, %d]", k, d)
	}
	largest := op.AttrInt("largest", 1) != 0
	outer, inner := ShapeSize(x.Shape[:axis]), ShapeSize(x.Shape[axis+1:])
	shape := slices.Clone(x.Shape)
	shape[axis] = k
	m := &gatherMap{Shape: shape, Pos: make([]int, ShapeSize(shape))}
	idx := NewTensor(shape, nil)
	order := make([]int, d)
	for o := range outer {
		for c := range inner {
			at := func(j int) float64 { return x.Data[(o*d+j)*inner+c] }
			for j := range order {
				order[j] = j
			}
			sort.SliceStable(order, func(a, b int) bool {
				va, vb := at(order[a]), at(order[b])
				if largest {
					return va > vb
				}
				return va < vb
			})
			for j := 0; j < k; j++ {
				q := (o*k+j)*inner + c
				m.Pos[q] = (o*d+order[j])*inner + c
				idx.Data[q] = float64(order[j])
			}
		}
	}
	return m, idx, nil
}

func topKMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	m, _, err := topKSelect(op, in)
	return m, err
}

// nonZeroForward lists the indices of the non-zero elements, [rank, nnz],
// in row-major order.
func nonZeroForward(_ *onnxio.Op, in []*Tensor) (*Tensor, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	var nz []int
	for i, v := range x.Data {
		if v != 0 {
			nz = append(nz, i)
		}
	}
	r := x.Rank()
	out := NewTensor([]int{r, len(nz)}, nil)
	st := strides(x.Shape)
	for c, i := range nz {
		for a := 0; a < r; a++ {
			out.Data[a*len(nz)+c] = float64(i / st[a] % x.Shape[a])
		}
	}
	return out, nil
}
