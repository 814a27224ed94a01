// Package tol holds the tolerance checks and random test vectors the
// numeric tests of several packages share, so that "close enough" means
// the same thing in each of them.
package tol

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Near reports whether got is within rel*|want| + abs of want.
func Near(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

// CheckClose fails t unless got and want have the same length and every
// element is Near (NaN only where want is NaN); it names at most five
// differing elements and counts the rest.
func CheckClose(t testing.TB, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	for q := range got {
		if !Near(got[q], want[q], rel, abs) || math.IsNaN(got[q]) != math.IsNaN(want[q]) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.17g, want %.17g", what, q, got[q], want[q])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
}

// Normal is n standard-normal draws of rng.
func Normal(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}
