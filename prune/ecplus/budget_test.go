package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestRowQuotas compares the quotas with a brute-force ranking.
func TestRowQuotas(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name     string
		score    []float64
		out, in  int
		k        int
		expected []int
	}{
		{"simple", []float64{1, 2, 3, 0, 5, 6}, 2, 3, 3, []int{2, 1}},
		{"ties by index", []float64{1, 1, 1, 1, 1, 1}, 3, 2, 3, []int{2, 1, 0}},
		{"none", []float64{1, 2, 3, 4}, 2, 2, 0, []int{0, 0}},
		{"all", []float64{1, 2, 3, 4}, 2, 2, 4, []int{2, 2}},
		{"nan last", []float64{nan, 5, 1, 2}, 2, 2, 3, []int{1, 2}},
		{"negative", []float64{-1, 0, -3, 2, -2, 1}, 3, 2, 2, []int{0, 1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rowQuotas(tc.score, tc.out, tc.in, tc.k)
			if fmt.Sprint(got) != fmt.Sprint(tc.expected) {
				t.Errorf("quotas %v, want %v", got, tc.expected)
			}
		})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		out, in := 1+rng.IntN(6), 1+rng.IntN(6)
		score := make([]float64, out*in)
		for q := range score {
			score[q] = float64(rng.IntN(4)) // many ties
		}
		k := rng.IntN(out*in + 1)
		idx := make([]int, len(score))
		for q := range idx {
			idx[q] = q
		}
		sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] < score[idx[b]] })
		want := make([]int, out)
		for _, q := range idx[:k] {
			want[q/in]++
		}
		got := rowQuotas(score, out, in, k)
		sum := 0
		for _, v := range got {
			sum += v
		}
		if sum != k || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("trial %d: quotas %v (sum %d), want %v (k %d)", trial, got, sum, want, k)
		}
	}
	for quota := 0; quota < 20; quota++ {
		for rounds := 1; rounds < 7; rounds++ {
			sum := 0
			for r := 0; r < rounds; r++ {
				tk := roundTake(quota, r, rounds)
				if tk < quota/rounds || tk > quota/rounds+1 {
					t.Errorf("roundTake(%d, %d, %d) = %d: uneven", quota, r, rounds, tk)
				}
				sum += tk
			}
			if sum != quota {
				t.Errorf("quota %d over %d rounds: takes sum to %d", quota, rounds, sum)
			}
		}
	}
}
