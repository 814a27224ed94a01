package ecplus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ecprune/ecprune/internal/tol"

	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/prune/internal/solve"
)

// reconFixture is one layer's resident data: centred inputs ac, residuals
// e, weights g, a mask and the weights and bias that produced e.
type reconFixture struct {
	rd           *resident
	w, b, shift  []float64
	pruned       []bool
	out, in, per int
}

func newReconFixture(rng *rand.Rand, out, in, rows, per int, deadCol bool) *reconFixture {
	f := &reconFixture{rd: newResident(rows, out, in), out: out, in: in, per: per}
	f.shift = tol.Normal(rng, in)
	for j := 0; j < in; j++ {
		for r := 0; r < rows; r++ {
			if !(deadCol && j == 1) {
				f.rd.ac[j*rows+r] = rng.NormFloat64() + 0.5*f.shift[j]
			}
		}
	}
	for q := range f.rd.e {
		f.rd.e[q] = rng.NormFloat64()
		f.rd.g[q] = rng.Float64() + 0.1
	}
	f.w = tol.Normal(rng, out*in)
	f.b = tol.Normal(rng, out)
	f.pruned = make([]bool, out*in)
	for q := range f.pruned {
		if rng.IntN(3) == 0 {
			f.pruned[q] = true
			f.w[q] = 0
		}
	}
	return f
}

func (f *reconFixture) clone() *reconFixture {
	c := *f
	rd := *f.rd
	rd.ac, rd.e, rd.g = slices.Clone(f.rd.ac), slices.Clone(f.rd.e), slices.Clone(f.rd.g)
	c.rd = &rd
	c.w, c.b = slices.Clone(f.w), slices.Clone(f.b)
	return &c
}

// TestReconstructIsLeastSquares: every row's kept weights and bias after
// the reconstruction are the explicit damped least-squares solution
//
//	min ||X theta - z0_i||^2 + lambda ||theta_K - w_K||^2,
//
// X = [a'_K, 1] on the uncentred inputs a' = ac + shift, z0_i = z'_i - e_i
// the target, z'_i = a' w_i + b_i the row's current pre-activations, and
// the residual becomes X theta - z0_i.
func TestReconstructIsLeastSquares(t *testing.T) {
	for _, tc := range []struct {
		name               string
		out, in, rows, per int
		damp               float64
		deadCol            bool
	}{
		{"tall", 3, 5, 40, 1, 0.01, false},
		{"fewer samples than inputs", 2, 9, 6, 1, 0.1, false},
		{"dead input", 3, 4, 30, 1, 0.01, true},
		{"several rows per sample", 2, 4, 24, 3, 0.5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, uint64(tc.in*tc.rows)))
			f := newReconFixture(rng, tc.out, tc.in, tc.rows, tc.per, tc.deadCol)
			got := f.clone()
			e := &ecp{eo: Options{Recon: ReconOn, ReconDamp: tc.damp}}
			changed, _ := e.reconstruct(got.rd, got.w, got.b, got.pruned, got.shift, tc.out, tc.in, tc.per)
			if !changed {
				t.Fatal("not reconstructed")
			}
			n, in := tc.rows, tc.in
			var tr float64
			for j := 0; j < in; j++ {
				for r := 0; r < n; r++ {
					tr += f.rd.ac[j*n+r] * f.rd.ac[j*n+r]
				}
			}
			lambda := tc.damp * tr / float64(in)
			for i := 0; i < tc.out; i++ {
				var keep []int
				for j := 0; j < in; j++ {
					if !f.pruned[i*in+j] {
						keep = append(keep, j)
					}
				}
				k := len(keep)
				x := mat.NewDense(n, k+1, nil)
				z0 := mat.NewVecDense(n, nil)
				for r := 0; r < n; r++ {
					zc := f.b[i]
					for j := 0; j < in; j++ {
						zc += f.w[i*in+j] * (f.rd.ac[j*n+r] + f.shift[j])
					}
					z0.SetVec(r, zc-f.rd.e[i*n+r])
					for p, j := range keep {
						x.Set(r, p, f.rd.ac[j*n+r]+f.shift[j])
					}
					x.Set(r, k, 1)
				}
				// Normal equations with the damping on the weights only.
				var a mat.Dense
				a.Mul(x.T(), x)
				var rhs mat.VecDense
				rhs.MulVec(x.T(), z0)
				for p, j := range keep {
					a.Set(p, p, a.At(p, p)+lambda)
					rhs.SetVec(p, rhs.AtVec(p)+lambda*f.w[i*in+j])
				}
				var theta mat.VecDense
				if err := theta.SolveVec(&a, &rhs); err != nil {
					t.Fatal(err)
				}
				want := make([]float64, in)
				for p, j := range keep {
					want[j] = theta.AtVec(p)
				}
				tol.CheckClose(t, "row weights", got.w[i*in:(i+1)*in], want, 1e-8, 1e-9)
				tol.CheckClose(t, "bias", got.b[i:i+1], []float64{theta.AtVec(k)}, 1e-8, 1e-9)
				var fit mat.VecDense
				fit.MulVec(x, &theta)
				fit.SubVec(&fit, z0)
				tol.CheckClose(t, "residual", got.rd.e[i*n:(i+1)*n], fit.RawVector().Data, 1e-8, 1e-9)
			}
		})
	}
}

// TestReconstructAuto: the held-out decision, taken on all rows or on a
// subset of them, either leaves the layer as it was or reconstructs it
// exactly as ReconOn does, and reconstructs when the held-out samples
// follow the fitted ones.
func TestReconstructAuto(t *testing.T) {
	defer func(v int) { reconTestMax = v }(reconTestMax)
	for _, rows := range []int{128, 2, 1} {
		reconTestMax = rows
		t.Run(fmt.Sprintf("%d test rows", rows), testReconstructAuto)
	}
}

func testReconstructAuto(t *testing.T) {
	for seed := uint64(0); seed < 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 4))
		f := newReconFixture(rng, 3, 4, 50, 1, false)
		if seed%2 == 0 {
			// A residual that the kept inputs explain: reconstruction helps.
			for i := 0; i < 3; i++ {
				for r := 0; r < 50; r++ {
					f.rd.e[i*50+r] = 0.01 * f.rd.e[i*50+r]
					for j := 0; j < 4; j++ {
						if !f.pruned[i*4+j] {
							f.rd.e[i*50+r] += 0.3 * float64(j+1) * f.rd.ac[j*50+r]
						}
					}
				}
			}
		}
		on, auto := f.clone(), f.clone()
		(&ecp{eo: Options{Recon: ReconOn, ReconDamp: 0.01}}).reconstruct(on.rd, on.w, on.b, on.pruned, on.shift, 3, 4, 1)
		changed, why := (&ecp{eo: Options{Recon: ReconAuto, ReconDamp: 0.01}}).reconstruct(auto.rd, auto.w, auto.b, auto.pruned, auto.shift, 3, 4, 1)
		want := f
		if changed {
			want = on
		} else if seed%2 == 0 {
			t.Errorf("seed %d: an explainable residual was not reconstructed: %s", seed, why)
		}
		tol.CheckClose(t, "weights", auto.w, want.w, 1e-9, 1e-12)
		tol.CheckClose(t, "bias", auto.b, want.b, 1e-9, 1e-12)
		tol.CheckClose(t, "residual", auto.rd.e, want.rd.e, 1e-9, 1e-12)
	}
}

// TestReconCG: run to convergence, the conjugate gradients give the rows'
// Cholesky solutions; a few iterations already lower every row's
// objective.
func TestReconCG(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	f := newReconFixture(rng, 6, 8, 40, 1, true)
	m := f.in + 1
	gram := make([]float64, m*m)
	c := make([]float64, m*f.out)
	all := make([]int, f.rd.rows)
	for r := range all {
		all[r] = r
	}
	aug := reconAug(f.rd.ac, f.rd.rows, f.in, all, nil)
	reconGram(aug, m, len(all), gram)
	reconCross(aug, f.rd.e, f.rd.rows, m, all, nil, c, nil)
	lambda := reconLambda(gram, f.in, 0.01)
	want := make([]float64, f.out*m)
	if how := solve.Masked(gram, c, f.out, f.in, f.pruned, lambda, want, maskedOptions()); how != "Cholesky per row" {
		t.Fatalf("small layer solved by %s", how)
	}
	got := make([]float64, f.out*m)
	before := slices.Clone(gram)
	solve.MaskedCG(gram, c, f.out, f.in, f.pruned, lambda, got, 500, 1e-12)
	if !slices.Equal(gram, before) {
		t.Error("the Gram matrix changed")
	}
	tol.CheckClose(t, "converged", got, want, 1e-7, 1e-9)
}
