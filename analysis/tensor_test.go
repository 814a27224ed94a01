package analysis

import (
	"testing"
)

// TestBroadcastShape checks numpy's rules, including rank extension, size-1
// and size-0 dims, and incompatible pairs.
func TestBroadcastShape(t *testing.T) {
	cases := []struct {
		a, b, want []int
		ok         bool
	}{
		{sh(2, 3), sh(3), sh(2, 3), true},
		{sh(2, 1), sh(1, 3), sh(2, 3), true},
		{sh(), sh(4, 5), sh(4, 5), true},
		{sh(5, 1, 4), sh(3, 1), sh(5, 3, 4), true},
		{sh(0, 3), sh(1, 3), sh(0, 3), true},
		{sh(2, 3), sh(2), nil, false},
		{sh(0), sh(2), nil, false},
	}
	for _, c := range cases {
		got, err := BroadcastShape(c.a, c.b)
		if (err == nil) != c.ok || (c.ok && !SameShape(got, c.want)) {
			t.Errorf("BroadcastShape(%v, %v) = %v, %v; want %v ok=%v", c.a, c.b, got, err, c.want, c.ok)
		}
	}
}

// TestBcastIndex checks the element map broadcasting reads through.
func TestBcastIndex(t *testing.T) {
	cases := []struct {
		out, in []int
		want    []int // nil: identity
	}{
		{sh(2, 3), sh(2, 3), nil},
		{sh(1, 2, 3), sh(2, 3), nil},
		{sh(2, 3), sh(3), []int{0, 1, 2, 0, 1, 2}},
		{sh(2, 3), sh(2, 1), []int{0, 0, 0, 1, 1, 1}},
		{sh(2, 3), sh(), []int{0, 0, 0, 0, 0, 0}},
		{sh(2, 2, 2), sh(2, 1, 2), []int{0, 1, 0, 1, 2, 3, 2, 3}},
	}
	for _, c := range cases {
		got := bcastIndex(c.out, c.in)
		if (got == nil) != (c.want == nil) || len(got) != len(c.want) {
			t.Errorf("bcastIndex(%v, %v) = %v, want %v", c.out, c.in, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("bcastIndex(%v, %v) = %v, want %v", c.out, c.in, got, c.want)
				break
			}
		}
	}
}

// TestTensorHelpers checks Flat, Batch, Reshape and Clone.
func TestTensorHelpers(t *testing.T) {
	x := NewTensor(sh(2, 3, 4), nil)
	for i := range x.Data {
		x.Data[i] = float64(i)
	}
	if r, c := Flat(x); r != 6 || c != 4 {
		t.Errorf("Flat = %d, %d", r, c)
	}
	if r, c := Flat(Zeros()); r != 1 || c != 1 {
		t.Errorf("Flat(scalar) = %d, %d", r, c)
	}
	b := x.Batch(1, 2)
	if !SameShape(b.Shape, sh(1, 3, 4)) || b.Data[0] != 12 || len(b.Data) != 12 {
		t.Errorf("Batch(1, 2) = %v %v", b.Shape, b.Data)
	}
	r := x.Reshape(6, 4)
	r.Data[0] = -1
	if x.Data[0] != -1 {
		t.Error("Reshape does not share data")
	}
	c := x.Clone()
	c.Data[1] = -5
	if x.Data[1] == -5 {
		t.Error("Clone shares data")
	}
	defer func() {
		if recover() == nil {
			t.Error("NewTensor with a wrong length did not panic")
		}
	}()
	NewTensor(sh(2), []float64{1})
}
