package tol

import (
	"math"
	"testing"
)

func TestNear(t *testing.T) {
	for _, c := range []struct {
		got, want, rel, abs float64
		ok                  bool
	}{
		{1, 1, 0, 0, true},
		{1.05, 1, 0.1, 0, true},
		{1.2, 1, 0.1, 0, false},
		{0.05, 0, 0, 0.1, true},
		{math.NaN(), 1, 1, 1, false},
	} {
		if got := Near(c.got, c.want, c.rel, c.abs); got != c.ok {
			t.Errorf("Near(%g, %g, %g, %g) = %v, want %v", c.got, c.want, c.rel, c.abs, got, c.ok)
		}
	}
}
