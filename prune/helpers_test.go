package prune

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

func checkClose(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	for q := range got {
		if !near(got[q], want[q], rel, abs) || math.IsNaN(got[q]) != math.IsNaN(want[q]) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.12g, want %.12g", what, q, got[q], want[q])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
}

func randSlice(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}
