package prune

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/internal/tol"

	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/prune/internal/solve"
)

// obsBruteForce is the SparseGPT rule written out with explicit inverses:
// at column j the later columns F = {j, .., cols-1} are free, and removing
// w_ij moves row i's free weights by -w_ij / [H_F^-1]_00 [H_F^-1]_0,:,
// H_F the (damped) Hessian restricted to F (optimal brain surgeon). The
// mask of a block is chosen at its start by w^2 / [H_F^-1]_00, kb per
// block as sparseGPTLayer spreads them.
func obsBruteForce(w []float64, out, cols, prunable int, h []float64, k int, percDamp float64, blockSize int) ([]float64, []bool) {
	w = append([]float64(nil), w...)
	h = append([]float64(nil), h...)
	var mean float64
	for j := 0; j < cols; j++ {
		if h[j*cols+j] == 0 {
			h[j*cols+j] = 1
			for i := 0; i < out; i++ {
				w[i*cols+j] = 0
			}
		}
		mean += h[j*cols+j]
	}
	for j := 0; j < cols; j++ {
		h[j*cols+j] += percDamp * mean / float64(cols)
	}
	inv := func(j int) *mat.Dense { // [H_F]^-1 for F = {j..}
		n := cols - j
		sub := mat.NewDense(n, n, nil)
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				sub.Set(a, b, h[(j+a)*cols+j+b])
			}
		}
		var m mat.Dense
		if err := m.Inverse(sub); err != nil {
			panic(err)
		}
		return &m
	}
	pruned := make([]bool, out*prunable)
	done := 0
	for i1 := 0; i1 < cols; i1 += blockSize {
		i2 := min(i1+blockSize, cols)
		end := min(i2, prunable)
		kb := 0
		if end > i1 {
			kb = int(math.Floor(float64(k)*float64(end)/float64(prunable)+0.5)) - done
		}
		done += kb
		type cand struct {
			s float64
			q int
		}
		var cs []cand
		for i := 0; i < out; i++ {
			for j := i1; j < end; j++ {
				d := inv(j).At(0, 0)
				cs = append(cs, cand{w[i*cols+j] * w[i*cols+j] / d, i*(end-i1) + j - i1})
			}
		}
		// Selection by (score, position), as MarkSmallest does.
		for a := 0; a < kb; a++ {
			best := -1
			for b, c := range cs {
				if c.q < 0 {
					continue
				}
				if best < 0 || c.s < cs[best].s || (c.s == cs[best].s && c.q < cs[best].q) {
					best = b
				}
			}
			q := cs[best].q
			pruned[(q/(end-i1))*prunable+i1+q%(end-i1)] = true
			cs[best].q = -1
		}
		for j := i1; j < i2; j++ {
			m := inv(j)
			for i := 0; i < out; i++ {
				if j >= prunable || !pruned[i*prunable+j] {
					continue
				}
				f := w[i*cols+j] / m.At(0, 0)
				for b := 0; b < cols-j; b++ {
					w[i*cols+j+b] -= f * m.At(0, b)
				}
				w[i*cols+j] = 0
			}
		}
	}
	return w, pruned
}

func TestSparseGPTLayerIsOBS(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		out, in, n, k, block int
		bias, deadInput      bool
	}{
		{"one block", 4, 6, 30, 10, 128, false, false},
		{"blocks of 2", 4, 7, 30, 13, 2, false, false},
		{"blocks of 3 with bias", 5, 7, 40, 20, 3, true, false},
		{"dead input", 3, 6, 20, 9, 4, true, true},
		{"fewer samples than inputs", 3, 9, 5, 15, 4, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, uint64(tc.out*tc.in+tc.block)))
			cols := tc.in
			if tc.bias {
				cols++
			}
			x := make([]float64, tc.n*cols)
			for r := 0; r < tc.n; r++ {
				for j := 0; j < tc.in; j++ {
					if !(tc.deadInput && j == 2) {
						x[r*cols+j] = rng.NormFloat64() + 0.3*float64(j%3)
					}
				}
				if tc.bias {
					x[r*cols+tc.in] = 1
				}
			}
			h := make([]float64, cols*cols)
			solve.AddTN(tc.n, cols, cols, x, x, h)
			w := tol.Normal(rng, tc.out*cols)
			want, wantMask := obsBruteForce(w, tc.out, cols, tc.in, h, tc.k, 0.01, tc.block)
			got := append([]float64(nil), w...)
			mask := make([]bool, tc.out*tc.in)
			if err := sparseGPTLayer(got, tc.out, cols, tc.in, append([]float64(nil), h...), tc.k, 0.01, tc.block, mask); err != nil {
				t.Fatal(err)
			}
			removed := 0
			for q, p := range mask {
				if p != wantMask[q] {
					t.Fatalf("mask differs at %d", q)
				}
				if p {
					removed++
					if got[(q/tc.in)*cols+q%tc.in] != 0 {
						t.Errorf("pruned weight %d is %g", q, got[q])
					}
				}
			}
			if removed != tc.k {
				t.Errorf("removed %d, want %d", removed, tc.k)
			}
			tol.CheckClose(t, "weights", got, want, 1e-9, 1e-9)
		})
	}
}
