package prune

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// selNet is a network of dense layers of the given shapes and scores
// drawn from few values (many ties) with some NaN.
func selNet(rng *rand.Rand, shapes [][2]int) (*onnxio.Network, *analysis.Scores) {
	net := &onnxio.Network{Evaluable: true}
	sc := &analysis.Scores{Method: "test"}
	for i, s := range shapes {
		l := &onnxio.Layer{Index: i, Name: string(rune('A' + i)), Out: s[0], In: s[1], W: make([]float64, s[0]*s[1]), B: make([]float64, s[0]), Prunable: true}
		for q := range l.W {
			l.W[q] = rng.Float64() - 0.5
		}
		net.Layers = append(net.Layers, l)
		score := make([]float64, len(l.W))
		delta := make([]float64, len(l.W))
		for q := range score {
			switch rng.IntN(10) {
			case 0:
				score[q] = math.NaN()
			default:
				score[q] = float64(rng.IntN(7)) // ties
			}
			delta[q] = rng.Float64()
		}
		sc.Layers = append(sc.Layers, &analysis.LayerScores{Layer: l, Score: score, Delta: delta})
	}
	return net, sc
}

// bruteOrder sorts (layer, index) pairs by METHOD.md's order.
func bruteOrder(sc *analysis.Scores, layers []int) [][2]int {
	var all [][2]int
	for _, li := range layers {
		for q := range sc.Layers[li].Score {
			all = append(all, [2]int{li, q})
		}
	}
	sort.SliceStable(all, func(a, b int) bool {
		sa, sb := sc.Layers[all[a][0]].Score[all[a][1]], sc.Layers[all[b][0]].Score[all[b][1]]
		if math.IsNaN(sa) != math.IsNaN(sb) {
			return math.IsNaN(sb)
		}
		if !math.IsNaN(sa) && sa != sb {
			return sa < sb
		}
		return false // stable: layer order, then index
	})
	return all
}

// TestSelectAgainstSort: the quickselect picks exactly the weights a full
// stable sort by (score, layer, index) picks, with METHOD.md's count, for
// global and per-layer scopes, skipped and fixed layers; compensation adds
// the deltas of the removed weights to their biases.
func TestSelectAgainstSort(t *testing.T) {
	shapes := [][2]int{{7, 5}, {3, 7}, {11, 3}, {1, 11}}
	cases := []struct {
		name string
		opt  Options
	}{
		{"global 0.5", Options{Sparsity: 0.5, Compensate: true}},
		{"global 0.9", Options{Sparsity: 0.9, Scope: Global}},
		{"global 0", Options{Sparsity: 0}},
		{"layer 0.37", Options{Sparsity: 0.37, Scope: Layer, Compensate: true}},
		{"skip and fixed", Options{Sparsity: 0.6, Skip: []string{"B"}, LayerSparsity: map[string]float64{"C": 0.25}}},
		{"layer, skip and fixed", Options{Sparsity: 0.45, Scope: Layer, Skip: []string{"B"}, LayerSparsity: map[string]float64{"C": 0.25}, Compensate: true}},
	}
	for seed := uint64(1); seed <= 20; seed++ {
		for _, c := range cases {
			rng := rand.New(rand.NewPCG(seed, 99))
			net, sc := selNet(rng, shapes)
			switch seed % 3 {
			case 1: // NaN-free, many ties, both zeros (equal: ties by position)
				for _, ls := range sc.Layers {
					for q := range ls.Score {
						ls.Score[q] = []float64{0, math.Copysign(0, -1), 1, 2, -1}[rng.IntN(5)]
					}
				}
			case 2: // everything tied
				for _, ls := range sc.Layers {
					for q := range ls.Score {
						ls.Score[q] = 0.5
					}
				}
			}
			plan, err := Select(net, sc, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			want := map[[2]int]bool{}
			var globalLayers []int
			for li, l := range net.Layers {
				switch {
				case l.Name == "B" && len(c.opt.Skip) > 0:
				case l.Name == "C" && c.opt.LayerSparsity != nil:
					for _, p := range bruteOrder(sc, []int{li})[:Count(0.25, l.Params())] {
						want[p] = true
					}
				case c.opt.Scope == Layer:
					for _, p := range bruteOrder(sc, []int{li})[:Count(c.opt.Sparsity, l.Params())] {
						want[p] = true
					}
				default:
					globalLayers = append(globalLayers, li)
				}
			}
			if len(globalLayers) > 0 {
				order := bruteOrder(sc, globalLayers)
				for _, p := range order[:Count(c.opt.Sparsity, len(order))] {
					want[p] = true
				}
			}
			removed := 0
			for li, lp := range plan.Layers {
				l := net.Layers[li]
				shift := make([]float64, l.Out)
				for q, p := range lp.Pruned {
					if p != want[[2]int{li, q}] {
						t.Fatalf("seed %d %s: layer %d weight %d pruned=%v, sort says %v", seed, c.name, li, q, p, !p)
					}
					if p {
						removed++
						shift[q/l.In] += sc.Layers[li].Delta[q]
						if lp.W[q] != 0 {
							t.Fatalf("pruned weight not zero")
						}
					} else if lp.W[q] != l.W[q] {
						t.Fatalf("kept weight changed")
					}
				}
				for i := range shift {
					wantB := l.B[i]
					if c.opt.Compensate {
						wantB += shift[i]
					}
					if lp.B[i] != wantB {
						t.Fatalf("%s: bias %d = %g, want %g", c.name, i, lp.B[i], wantB)
					}
				}
			}
			if removed != plan.Removed || removed != len(want) {
				t.Fatalf("%s: removed %d (plan %d), want %d", c.name, removed, plan.Removed, len(want))
			}
		}
	}
}

// TestSelectNM: N:M keeps the N highest of every M consecutive weights of
// each row; a shorter last group keeps up to N.
func TestSelectNM(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	net, sc := selNet(rng, [][2]int{{5, 10}})
	plan, err := Select(net, sc, Options{NM: &NM{N: 2, M: 4}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		for g := 0; g < 10; g += 4 {
			kept := 0
			size := min(4, 10-g)
			for j := g; j < g+size; j++ {
				if !plan.Layers[0].Pruned[i*10+j] {
					kept++
				}
			}
			if kept != min(2, size) {
				t.Errorf("row %d group %d keeps %d", i, g, kept)
			}
		}
	}
}
