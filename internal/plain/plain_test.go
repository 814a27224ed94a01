package plain

import "testing"

func TestShape(t *testing.T) {
	for _, c := range []struct {
		dims []int64
		want string
	}{
		{nil, "scalar"},
		{[]int64{}, "scalar"},
		{[]int64{784}, "784"},
		{[]int64{64, 784}, "64 x 784"},
		{[]int64{-1, 784}, "-1 x 784"},
		{[]int64{1, 3, 224, 224}, "1 x 3 x 224 x 224"},
		{[]int64{0, 5}, "0 x 5"},
	} {
		if got := Shape(c.dims); got != c.want {
			t.Errorf("Shape(%v) = %q, want %q", c.dims, got, c.want)
		}
	}
	if got := Shape([]int{2, 3}); got != "2 x 3" {
		t.Errorf("Shape([]int) = %q", got)
	}
}

func TestDeclared(t *testing.T) {
	for _, c := range []struct {
		dims []int64
		want string
	}{
		{nil, "scalar"},
		{[]int64{-1, 784}, "N x 784"},
		{[]int64{0, 784}, "N x 784"},
		{[]int64{1, -1, 768}, "1 x ? x 768"},
		{[]int64{-1, -1}, "N x ?"},
		{[]int64{8}, "8"},
	} {
		if got := Declared(c.dims); got != c.want {
			t.Errorf("Declared(%v) = %q, want %q", c.dims, got, c.want)
		}
	}
}

func TestDeclaredSample(t *testing.T) {
	for _, c := range []struct {
		dims []int64
		want string
	}{
		{nil, "scalar"},
		{[]int64{784}, "784"},
		{[]int64{-1, 768}, "? x 768"},
		{[]int64{3, 0, 0}, "3 x ? x ?"},
	} {
		if got := DeclaredSample(c.dims); got != c.want {
			t.Errorf("DeclaredSample(%v) = %q, want %q", c.dims, got, c.want)
		}
	}
}

func TestList(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		{[]int{}, "none"},
		{[]int{1}, "1"},
		{[]int{0, 0, -1, 0}, "0, 0, -1, 0"},
		{[]string{"a", "b c"}, "a, b c"},
		{[]float64{0.5, 2}, "0.5, 2"},
	} {
		var got string
		switch v := c.in.(type) {
		case []int:
			got = List(v)
		case []string:
			got = List(v)
		case []float64:
			got = List(v)
		}
		if got != c.want {
			t.Errorf("List(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestChoices(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{nil, "none"},
		{[]string{"ec"}, "ec"},
		{[]string{"ec", "magnitude"}, "ec or magnitude"},
		{[]string{"ec", "obd", "magnitude"}, "ec, obd or magnitude"},
	} {
		if got := Choices(c.in); got != c.want {
			t.Errorf("Choices(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestOpsets(t *testing.T) {
	for _, c := range []struct {
		in   map[string]int64
		want string
	}{
		{nil, "none"},
		{map[string]int64{"": 13}, "ai.onnx 13"},
		{map[string]int64{"ai.onnx": 13}, "ai.onnx 13"},
		{map[string]int64{"com.microsoft": 1, "": 17, "ai.onnx.ml": 3}, "ai.onnx 17, ai.onnx.ml 3, com.microsoft 1"},
	} {
		if got := Opsets(c.in); got != c.want {
			t.Errorf("Opsets(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
