package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/internal/tol"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// TestCompactSums: the compact form's variances, means and costs agree
// with the float64 sums' (to float32 rounding), on every weight and on a
// subset of rows and columns, with one block of rows or several; its
// residual sums are the float64 ones exactly.
func TestCompactSums(t *testing.T) {
	for _, tc := range []struct {
		li    int
		block int
	}{{0, 1 << 21}, {1, 1 << 21}, {1, 3 * 70}, {2, 5}} {
		t.Run(fmt.Sprintf("layer %d block %d", tc.li, tc.block), func(t *testing.T) {
			withLimits(t, 6, 1<<25, 5e7)
			old := compactBlock
			compactBlock = tc.block
			t.Cleanup(func() { compactBlock = old })
			rng := rand.New(rand.NewPCG(uint64(tc.li), 11))
			net := mlp(rng, []int{4, 70, 5, 3}, onnxio.OpTanh, -1)
			data := randData(rng, 19, 4)
			e := setup(t, net, data, Options{Lambda: 1, C: 0.5, Rounds: 2}, analysis.TaskRegression)
			cur := net.Clone()
			if tc.li > 0 {
				damage(cur, rng)
			}
			s, rd := layerSums(t, e, cur, tc.li)
			rd.f32 = true
			l := cur.Layers[tc.li]
			out, in := l.Out, l.In
			c := newECPSumsSmall(out, in)
			c.shift = s.shift
			rd.momentsCompact(c, true)
			tol.CheckClose(t, "s0", c.s0, s.s0, 1e-12, 0)
			tol.CheckClose(t, "se", c.se, s.se, 1e-12, 0)
			tol.CheckClose(t, "e1", c.e1, s.e1, 1e-12, 0)
			v, m := make([]float64, out*in), make([]float64, out*in)
			wantV, wantM := make([]float64, out*in), make([]float64, out*in)
			for q := range v {
				v[q], m[q] = float64(c.v32[q]), float64(c.m32[q])
				wantV[q] = s.variance(q)
				if s0 := s.s0[q/in]; s0 != 0 {
					wantM[q] = s.s1[q] / s0
				}
			}
			tol.CheckClose(t, "variance", v, wantV, 1e-4, 1e-6)
			tol.CheckClose(t, "mean", m, wantM, 1e-4, 1e-6)

			w := slices.Clone(l.Weights64())
			want := s.costs(new([]float64), w, 0.5)
			// costs gathers costsCompact's rows, all of them or every
			// third.
			costs := func(all bool, rows, cols []int, every int) []float64 {
				got := make([]float64, out*in)
				seen := 0
				rd.costsCompact(c, w, 0.5, all, rows, cols, func(i int) bool { return i%every == 0 }, func(i int, cost []float32) {
					if i%every != 0 || i < seen {
						t.Fatalf("row %d out of order or not asked for", i)
					}
					seen = i
					for j, x := range cost {
						got[i*in+j] = float64(x)
					}
				})
				return got
			}
			tol.CheckClose(t, "costs", costs(true, nil, nil, 1), want, 1e-4, 1e-6)
			some := costs(true, nil, nil, 3)
			for q := range want {
				if q/in%3 != 0 {
					want[q] = 0
				}
			}
			tol.CheckClose(t, "costs of every third row", some, want, 1e-4, 1e-6)

			// On a subset: sea there, zero elsewhere. Few columns are
			// gathered, most are not.
			var rows, few, most []int
			for i := 0; i < out; i += 2 {
				rows = append(rows, i)
			}
			for j := 1; j < in; j++ {
				if j%2 == 1 {
					few = append(few, j)
				}
				most = append(most, j)
			}
			for _, cols := range [][]int{few, most} {
				part := newECPSums(out, in)
				copy(part.s0, s.s0)
				copy(part.s1, s.s1)
				copy(part.s2, s.s2)
				rd.addResidualOn(part, true, rows, cols)
				want = part.costs(new([]float64), w, 0.5)
				got := costs(false, rows, cols, 1)
				tol.CheckClose(t, fmt.Sprintf("costs on %d rows and %d columns", len(rows), len(cols)), got, want, 1e-4, 1e-6)
			}

			// The update of e by blocks of rows is the one-product update.
			var removed []prune.Scored
			for q := range w {
				if rng.Float64() < 0.3 {
					removed = append(removed, prune.Scored{Pos: q})
				}
			}
			e0 := slices.Clone(rd.e)
			rd.seal()
			rd.update(removed, w, s.shift, in, nil, new([]float64))
			gotE := slices.Clone(rd.e)
			copy(rd.e, e0)
			rd.f32 = false
			rd.update(removed, w, s.shift, in, nil, new([]float64))
			tol.CheckClose(t, "e", gotE, rd.e, 1e-5, 1e-7)
		})
	}
}

// TestRowQuotas32: the float32 ranking counts what rowQuotas counts on
// the same scores, ties, signed zeros and NaNs included.
func TestRowQuotas32(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, tc := range []struct {
		out, in, k int
	}{{1, 1, 1}, {3, 7, 0}, {3, 7, 5}, {3, 7, 21}, {40, 33, 700}, {9, 100, 1}, {9, 100, 899}} {
		t.Run(fmt.Sprintf("%dx%d k %d", tc.out, tc.in, tc.k), func(t *testing.T) {
			s32 := make([]float32, tc.out*tc.in)
			s64 := make([]float64, len(s32))
			for q := range s32 {
				switch rng.IntN(8) {
				case 0:
					s32[q] = 0
				case 1:
					s32[q] = float32(math.Copysign(0, -1))
				case 2:
					s32[q] = float32(math.NaN())
				case 3:
					s32[q] = 1.5 // ties
				default:
					s32[q] = float32(rng.NormFloat64())
				}
				s64[q] = float64(s32[q])
			}
			got := rowQuotas32(s32, tc.out, tc.in, tc.k)
			want := rowQuotas(s64, tc.out, tc.in, tc.k)
			if !slices.Equal(got, want) {
				t.Fatalf("quotas %v, want %v", got, want)
			}
		})
	}
}

// TestECPlusSharedWeights: the working copy shares the original's
// float32 weights, which must come out of Prune as they went in, with
// and without reconstruction, exact or with probes (compact sums).
func TestECPlusSharedWeights(t *testing.T) {
	for k, tc := range []struct {
		name  string
		stats analysis.StatsOptions
		recon string
	}{
		{"exact", analysis.StatsOptions{}, ReconOff},
		{"exact, reconstruction", analysis.StatsOptions{}, ReconOn},
		{"probes, reconstruction", analysis.StatsOptions{Probes: 2}, ReconOn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 10, 1<<25, 5e7)
			rng := rand.New(rand.NewPCG(uint64(k), 21))
			net := mlp(rng, []int{5, 7, 6, 4}, onnxio.OpTanh, -1)
			var saved [][]float32
			for _, l := range net.Layers {
				w32 := make([]float32, len(l.W))
				for q, v := range l.W {
					w32[q] = float32(v)
				}
				l.W, l.W32 = nil, w32
				saved = append(saved, slices.Clone(w32))
			}
			data := randData(rng, 31, 5)
			st := collect(t, net, data, tc.stats)
			sc := ecScores(t, st)
			eo := Options{Lambda: 1, C: 0.5, Rounds: 3, RefitSteps: 1, Recon: tc.recon, ReconDamp: 0.01}
			plan, err := Prune(net, data, st, sc, prune.Options{Sparsity: 0.7}, eo, analysis.TaskRegression, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			for li, l := range net.Layers {
				if !slices.Equal(l.W32, saved[li]) || l.W != nil {
					t.Fatalf("layer %d: the original's weights changed", li)
				}
				if plan.Layers[li].Removed == 0 {
					t.Fatalf("layer %d: nothing removed", li)
				}
			}
		})
	}
}
