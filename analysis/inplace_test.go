package analysis

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// randomLayerStats builds statistics with rows of S0 = 0, zero weights,
// -0 and values whose variance rounds below zero.
func randomLayerStats(rng *rand.Rand, out, in int) *LayerStats {
	l := &onnxio.Layer{Name: "w", Out: out, In: in, W: randSlice(rng, out*in, -1, 1)}
	ls := &LayerStats{Layer: l, Shift: randSlice(rng, in, -0.5, 0.5), S0: randSlice(rng, out, 0, 3),
		S1: randSlice(rng, out*in, -2, 2), S2: randSlice(rng, out*in, 0, 4)}
	ls.S0[0] = 0
	l.W[1] = 0
	l.W[2] = math.Copysign(0, -1)
	ls.S2[in+1] = ls.S1[in+1] * ls.S1[in+1] / ls.S0[1] * (1 - 1e-16)
	return ls
}

func cloneLayerStats(ls *LayerStats) *LayerStats {
	c := *ls
	c.S1 = append([]float64(nil), ls.S1...)
	c.S2 = append([]float64(nil), ls.S2...)
	return &c
}

func sameBits(t *testing.T, what string, a, b []float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d values, want %d", what, len(a), len(b))
	}
	for q := range a {
		if math.Float64bits(a[q]) != math.Float64bits(b[q]) {
			t.Fatalf("%s[%d] = %v, want %v (bit for bit)", what, q, a[q], b[q])
		}
	}
}

func TestECImportanceInPlaceBitIdentical(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 3, 1000} {
		ls := randomLayerStats(rng, 9, 7)
		// Leftovers in the consumed storage must not leak into the zero rows.
		ref := cloneLayerStats(ls)
		imp0, delta0 := ref.ECImportance(n)
		nc0 := ref.NoCompImportance(n)
		ls2 := cloneLayerStats(ls)
		imp, delta := ls.ECImportanceInPlace(n)
		sameBits(t, "imp", imp, imp0)
		sameBits(t, "delta", delta, delta0)
		if ls.S1 != nil || ls.S2 != nil {
			t.Fatal("S1/S2 kept after ECImportanceInPlace")
		}
		sameBits(t, "nocomp", ls2.NoCompImportanceInPlace(n), nc0)
	}
}

func TestScoreConsumingMatchesScore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range []string{"ec", "ec-nocomp", "magnitude", "wanda"} {
		seed := rng.Uint64()
		build := func() *Stats {
			r := rand.New(rand.NewPCG(seed, 3))
			st := &Stats{N: 17}
			for k := 0; k < 3; k++ {
				ls := randomLayerStats(r, 5+k, 4+k)
				ls.SumA2 = randSlice(r, 4+k, 0, 2)
				st.Layers = append(st.Layers, ls)
			}
			return st
		}
		c, err := CriterionByName(name)
		if err != nil {
			t.Fatal(err)
		}
		want, err := c.Score(build(), 0)
		if err != nil {
			t.Fatal(err)
		}
		st := build()
		got, err := ScoreConsuming(c, st, 0)
		if err != nil {
			t.Fatal(err)
		}
		for k := range want.Layers {
			sameBits(t, name+" score", got.Layers[k].Score, want.Layers[k].Score)
			sameBits(t, name+" delta", got.Layers[k].Delta, want.Layers[k].Delta)
		}
		consumed := name == "ec" || name == "ec-nocomp"
		if (st.Layers[0].S1 == nil) != consumed {
			t.Errorf("%s: S1 consumed = %v, want %v", name, st.Layers[0].S1 == nil, consumed)
		}
	}
}

func TestConsumedSumsPanic(t *testing.T) {
	ls := randomLayerStats(rand.New(rand.NewPCG(3, 4)), 3, 3)
	ls.ECImportanceInPlace(2)
	defer func() {
		if recover() == nil {
			t.Error("ECImportance after ECImportanceInPlace did not panic")
		}
	}()
	ls.ECImportance(2)
}
