package analysis

import (
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"slices"
)

// Tensor is a dense float64 array in row-major order. A rank-0 tensor (a
// scalar) has an empty Shape and one element. Everything is float64 so
// that the analysis is not limited by the precision of the model's own
// element type.
type Tensor struct {
	Shape []int
	Data  []float64
}

// NewTensor wraps data (not copied) as a tensor of the given shape; nil
// data allocates zeros. A length mismatch is a programmer error and panics.
func NewTensor(shape []int, data []float64) *Tensor {
	n := ShapeSize(shape)
	if data == nil {
		data = make([]float64, n)
	} else if len(data) != n {
		panic(fmt.Sprintf("analysis.NewTensor: %d values for shape %s", len(data), plain.Shape(shape)))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: data}
}

// Zeros is a zero tensor of the given shape.
func Zeros(shape ...int) *Tensor { return NewTensor(shape, nil) }

// Len is the number of elements.
func (t *Tensor) Len() int { return len(t.Data) }

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.Shape) }

// Clone is a deep copy.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float64(nil), t.Data...)}
}

// Reshape returns a tensor sharing t's data with another shape of the same
// size; a size mismatch panics (programmer error).
func (t *Tensor) Reshape(shape ...int) *Tensor {
	return NewTensor(shape, t.Data)
}

// Batch returns rows [i, j) along the first axis, sharing t's data, for
// processing a batch (or a set of tangent directions) in chunks.
func (t *Tensor) Batch(i, j int) *Tensor {
	if len(t.Shape) == 0 || i < 0 || j < i || j > t.Shape[0] {
		panic(fmt.Sprintf("analysis.Tensor.Batch(%d, %d) of shape %s", i, j, plain.Shape(t.Shape)))
	}
	inner := ShapeSize(t.Shape[1:])
	shape := append([]int{j - i}, t.Shape[1:]...)
	return &Tensor{Shape: shape, Data: t.Data[i*inner : j*inner : j*inner]}
}

// Flat views t as a matrix over its last axis: cols is the last dimension
// and rows the product of the others (1 and 1 for a scalar). Dense layers
// act on this view.
func Flat(t *Tensor) (rows, cols int) {
	if len(t.Shape) == 0 {
		return 1, 1
	}
	cols = t.Shape[len(t.Shape)-1]
	return ShapeSize(t.Shape[:len(t.Shape)-1]), cols
}

// ShapeSize is the number of elements of a shape (1 for a scalar).
func ShapeSize(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// SameShape reports whether two shapes are identical.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }

// BroadcastShape is the numpy (ONNX multidirectional) broadcast of two
// shapes: aligned on the right, each pair of dims equal or one of them 1.
func BroadcastShape(a, b []int) ([]int, error) {
	r := max(len(a), len(b))
	out := make([]int, r)
	for i := 1; i <= r; i++ {
		da, db := 1, 1
		if i <= len(a) {
			da = a[len(a)-i]
		}
		if i <= len(b) {
			db = b[len(b)-i]
		}
		switch {
		case da == db:
			out[r-i] = da
		case da == 1:
			out[r-i] = db
		case db == 1:
			out[r-i] = da
		default:
			return nil, fmt.Errorf("shapes %s and %s do not broadcast", plain.Shape(a), plain.Shape(b))
		}
	}
	return out, nil
}

// bcastIndex maps each element of a tensor of shape out to the element of
// an operand of shape in that numpy broadcasting reads there. It returns nil
// when the map is the identity (in has out's layout), so callers can take a
// fast path. in must broadcast to out.
func bcastIndex(out, in []int) []int {
	n := ShapeSize(out)
	if ShapeSize(in) == n {
		// Equal sizes: in is out with leading 1s added or removed, so the
		// layouts coincide.
		return nil
	}
	r := len(out)
	stride := make([]int, r) // in's stride along each out axis; 0 where broadcast
	s := 1
	for ax, j := r-1, len(in)-1; ax >= 0 && j >= 0; ax, j = ax-1, j-1 {
		if in[j] != 1 {
			stride[ax] = s
		}
		s *= in[j]
	}
	idx := make([]int, n)
	if n == 0 {
		return idx
	}
	// One row of the last axis at a time, then the odometer over the
	// other axes.
	last, ls := out[r-1], stride[r-1]
	cnt := make([]int, r)
	off := 0
	for k := 0; k < n; k += last {
		row := idx[k : k+last]
		if ls == 0 {
			for i := range row {
				row[i] = off
			}
		} else {
			for i := range row {
				row[i] = off + i*ls
			}
		}
		for ax := r - 2; ax >= 0; ax-- {
			cnt[ax]++
			off += stride[ax]
			if cnt[ax] < out[ax] {
				break
			}
			off -= stride[ax] * out[ax]
			cnt[ax] = 0
		}
	}
	return idx
}

// withP prepends the tangent-direction dimension p to shape.
func withP(p int, shape []int) []int {
	s := make([]int, 0, len(shape)+1)
	return append(append(s, p), shape...)
}
