package prune

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/ecprune/ecprune/analysis"
)

// awkward draws scores full of ties and edge values: both zeros, NaN,
// infinities, subnormals, negative values and values one ulp apart (they
// differ only in the last radix digit).
func awkward(rng *rand.Rand, n int) []float64 {
	pool := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), 5e-324, -5e-324,
		1, math.Nextafter(1, 2), math.Nextafter(1, 0), -1, 1e300, -2.5, 3}
	s := make([]float64, n)
	for q := range s {
		switch rng.IntN(4) {
		case 0:
			s[q] = rng.NormFloat64()
		default:
			s[q] = pool[rng.IntN(len(pool))]
		}
	}
	return s
}

// TestMarkSmallestPartsAgainstSmallest: the radix select marks exactly the
// k first of (score, position) pairs in CompareScored order, as found by the
// quickselect ec+ uses and by a full sort, for every k on small inputs and
// random k on larger ones, across parts of different sizes.
func TestMarkSmallestPartsAgainstSmallest(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	trials := 200
	if testing.Short() {
		trials = 30 // with the large and tied cases among them
	}
	for trial := 0; trial < trials; trial++ {
		nparts := 1 + rng.IntN(4)
		parts := make([][]float64, nparts)
		var flat []float64
		for b := range parts {
			size := rng.IntN(40)
			if trial%10 == 0 {
				size = rng.IntN(3000)
			}
			parts[b] = awkward(rng, size)
			if trial%7 == 0 {
				for q := range parts[b] {
					parts[b][q] = 2 // all tied
				}
			}
			flat = append(flat, parts[b]...)
		}
		n := len(flat)
		var ks []int
		if n <= 40 {
			for k := -1; k <= n+1; k++ {
				ks = append(ks, k)
			}
		} else {
			ks = []int{0, 1, n / 2, n - 1, n, rng.IntN(n + 1)}
		}
		sorted := make([]Scored, n)
		for q, v := range flat {
			sorted[q] = Scored{v, q}
		}
		slices.SortFunc(sorted, CompareScored)
		for _, k := range ks {
			got := make([]bool, n)
			var last = -1
			MarkSmallest(parts, k, func(b, q int) {
				pos := q
				for _, p := range parts[:b] {
					pos += len(p)
				}
				if pos <= last {
					t.Fatalf("marks out of position order: %d after %d", pos, last)
				}
				last = pos
				got[pos] = true
			})
			want := make([]bool, n)
			for _, c := range sorted[:max(0, min(k, n))] {
				want[c.Pos] = true
			}
			cs := make([]Scored, n)
			for q, v := range flat {
				cs[q] = Scored{v, q}
			}
			if k > 0 && k < n {
				Smallest(cs, k)
				quick := make([]bool, n)
				for _, c := range cs[:k] {
					quick[c.Pos] = true
				}
				if !slices.Equal(quick, want) {
					t.Fatalf("trial %d: the quickselect and the sort disagree", trial)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("trial %d k=%d of %d: radix select differs from the sort", trial, k, n)
			}
		}
	}
}

// TestOrderKey: the keys order scores as CompareScored does.
func TestOrderKey(t *testing.T) {
	vals := []float64{math.Inf(-1), -1e300, -1, -5e-324, 0, math.Copysign(0, -1), 5e-324, 1, math.Nextafter(1, 2), 1e300, math.Inf(1), math.NaN(), -math.NaN()}
	for _, a := range vals {
		for _, b := range vals {
			want := CompareScored(Scored{a, 0}, Scored{b, 0})
			ka, kb := orderKey(a), orderKey(b)
			got := 0
			if ka < kb {
				got = -1
			} else if ka > kb {
				got = 1
			}
			if got != want {
				t.Errorf("order of %v, %v: keys say %d, CompareScored %d", a, b, got, want)
			}
		}
	}
}

// TestSelectConsumingSamePlan: SelectConsuming gives Select's plan bit for
// bit, with awkward scores (ties, NaN, both zeros), for every scope, and
// spends the scores; SelectMasks gives its masks and counts.
func TestSelectConsumingSamePlan(t *testing.T) {
	shapes := [][2]int{{7, 5}, {3, 7}, {11, 3}, {1, 11}}
	opts := []Options{
		{Sparsity: 0.5, Compensate: true},
		{Sparsity: 0.9, Scope: Global, Compensate: true},
		{Sparsity: 0.37, Scope: Layer, Compensate: true},
		{Sparsity: 0.6, Skip: []string{"B"}, LayerSparsity: map[string]float64{"C": 0.25}, Compensate: true},
		{NM: &NM{N: 2, M: 4}, Compensate: true},
	}
	for seed := uint64(1); seed <= 10; seed++ {
		for oi, opt := range opts {
			rng := rand.New(rand.NewPCG(seed, 5))
			net, sc := selNet(rng, shapes)
			for _, ls := range sc.Layers {
				ls.Score = awkward(rng, len(ls.Score))
				for q, v := range ls.Score {
					if math.IsInf(v, 0) {
						ls.Score[q] = 0 // keep Predicted finite to compare it
					}
				}
			}
			net.Layers[1].W[0] = math.Copysign(0, -1)
			copyScores := &analysis.Scores{Method: sc.Method}
			for _, ls := range sc.Layers {
				copyScores.Layers = append(copyScores.Layers, &analysis.LayerScores{Layer: ls.Layer,
					Score: append([]float64(nil), ls.Score...), Delta: append([]float64(nil), ls.Delta...)})
			}
			want, err := Select(net, sc, opt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := SelectConsuming(net, copyScores, opt)
			if err != nil {
				t.Fatal(err)
			}
			if got.Removed != want.Removed || got.Total != want.Total {
				t.Fatalf("opt %d: removed %d of %d, want %d of %d", oi, got.Removed, got.Total, want.Removed, want.Total)
			}
			for li, w := range want.Layers {
				g := got.Layers[li]
				if !slices.Equal(g.Pruned, w.Pruned) || g.Removed != w.Removed ||
					math.Float64bits(g.Predicted) != math.Float64bits(w.Predicted) {
					t.Fatalf("opt %d layer %d: selection differs", oi, li)
				}
				for _, pair := range [][2][]float64{{g.W, w.W}, {g.B, w.B}, {g.BiasShift, w.BiasShift}} {
					if len(pair[0]) != len(pair[1]) {
						t.Fatalf("opt %d layer %d: lengths differ", oi, li)
					}
					for q := range pair[0] {
						if math.Float64bits(pair[0][q]) != math.Float64bits(pair[1][q]) {
							t.Fatalf("opt %d layer %d: value %d differs: %v vs %v", oi, li, q, pair[0][q], pair[1][q])
						}
					}
				}
				if copyScores.Layers[li].Score != nil || copyScores.Layers[li].Delta != nil {
					t.Fatalf("opt %d layer %d: scores not spent", oi, li)
				}
			}
			// Select leaves its scores alone.
			for _, ls := range sc.Layers {
				if ls.Score == nil || ls.Delta == nil {
					t.Fatal("Select spent its scores")
				}
			}
			// SelectMasks: the same selection, no weights, scores kept.
			masks, err := SelectMasks(net, sc, opt)
			if err != nil {
				t.Fatal(err)
			}
			if masks.Removed != want.Removed || masks.Total != want.Total {
				t.Fatalf("opt %d: masks only: removed %d of %d, want %d of %d", oi, masks.Removed, masks.Total, want.Removed, want.Total)
			}
			for li, w := range want.Layers {
				g := masks.Layers[li]
				if !slices.Equal(g.Pruned, w.Pruned) || g.Removed != w.Removed ||
					math.Float64bits(g.Predicted) != math.Float64bits(w.Predicted) || g.W != nil || sc.Layers[li].Score == nil {
					t.Fatalf("opt %d layer %d: masks only: selection differs", oi, li)
				}
			}
		}
	}
}

// TestSmallest compares the selection with a full sort, on data with many
// equal scores (broken by index) and NaNs.
func TestSmallest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 300; trial++ {
		n := rng.IntN(200)
		cs := make([]Scored, n)
		for q := range cs {
			v := float64(rng.IntN(1 + trial%20))
			if rng.IntN(50) == 0 {
				v = math.NaN()
			}
			cs[q] = Scored{v, q}
		}
		rng.Shuffle(n, func(a, b int) { cs[a], cs[b] = cs[b], cs[a] })
		k := rng.IntN(n + 1)
		want := append([]Scored(nil), cs...)
		sort.Slice(want, func(a, b int) bool { return CompareScored(want[a], want[b]) < 0 })
		Smallest(cs, k)
		got := append([]Scored(nil), cs[:k]...)
		sort.Slice(got, func(a, b int) bool { return CompareScored(got[a], got[b]) < 0 })
		for q := range got {
			if got[q].Pos != want[q].Pos {
				t.Fatalf("trial %d (n %d, k %d): element %d is %v, want %v", trial, n, k, q, got[q], want[q])
			}
		}
		if len(cs) != n {
			t.Fatal("length changed")
		}
	}
}
