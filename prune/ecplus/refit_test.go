package ecplus

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ecprune/ecprune/internal/tol"

	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/internal/solve"
)

// refitFixture is a pruned network and the refitter over it.
func refitFixture(t *testing.T, head onnxio.OpKind, task analysis.Task, sparsity float64) (*ecp, *onnxio.Network, *refitter) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(head+2)))
	net := mlp(rng, []int{4, 6, 5, 3}, onnxio.OpTanh, head)
	data := randData(rng, 25, 4)
	eo := Options{Lambda: 1, C: 0.5, Rounds: 2}
	e := setup(t, net, data, eo, task)
	cur := net.Clone()
	for li := range e.st.Layers {
		k := prune.Count(sparsity, net.Layers[li].Params())
		if _, err := e.pruneLayer(cur, li, k); err != nil {
			t.Fatal(err)
		}
	}
	r, err := newRefitter(e, cur)
	if err != nil {
		t.Fatal(err)
	}
	return e, cur, r
}

// TestECPlusRefitLinearisation checks the gradient and the (generalised)
// Gauss-Newton matrix against finite differences, the matrix-free product
// against the assembled matrix, and CG against a dense solve.
func TestECPlusRefitLinearisation(t *testing.T) {
	cases := []struct {
		name   string
		head   onnxio.OpKind
		task   analysis.Task
		kl     bool
		gather int
	}{
		{"regression", -1, analysis.TaskRegression, false, 1 << 23},
		{"regression by batch", -1, analysis.TaskRegression, false, 0},
		{"logits classifier", -1, analysis.TaskClassification, true, 1 << 23},
		{"softmax head", onnxio.OpSoftmax, analysis.TaskRegression, true, 1 << 23},
		{"logsoftmax head by batch", onnxio.OpLogSoftmax, analysis.TaskClassification, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 9, 1<<25, 5e7)
			og := ecpGather
			ecpGather = tc.gather
			t.Cleanup(func() { ecpGather = og })
			e, _, r := refitFixture(t, tc.head, tc.task, 0.5)
			if r.rv.kl != tc.kl {
				t.Fatalf("kl = %v, want %v", r.rv.kl, tc.kl)
			}
			lin, grad, f, err := r.linearizeFull()
			if err != nil {
				t.Fatal(err)
			}
			g := lin.(*solve.Dense).Matrix()
			if f0, err := r.objective(false); err != nil || !tol.Near(f, f0, 1e-12, 0) {
				t.Errorf("objective from the linearisation %g, directly %g (%v)", f, f0, err)
			}
			// Lanczos on the assembled matrix (used above ecpCholeskyMax
			// biases) solves the same scaled system as Cholesky, for every
			// damping from one basis.
			kl := solve.NewScaled(lin.(*solve.Dense), ecpKrylovFull)
			for _, mu := range []float64{1e-3, 0.1, 1, 10, 1e3} {
				xc, err := lin.Solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				xk, err := kl.Solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				tol.CheckClose(t, fmt.Sprintf("Lanczos step at damping %g", mu), xk, xc, 1e-4, 1e-9)
			}
			_, gradFree, ff, err := r.linearizeFree()
			if err != nil {
				t.Fatal(err)
			}
			tol.CheckClose(t, "matrix-free gradient", gradFree, grad, 1e-12, 1e-15)
			if !tol.Near(ff, f, 1e-12, 0) {
				t.Errorf("objective from the matrix-free linearisation %g, want %g", ff, f)
			}
			th := r.get()
			nb := r.nb
			const h = 1e-5
			fdGrad := make([]float64, nb)
			// Per-sample outputs at theta +- h e_b give J by central
			// differences.
			outs := func(th []float64) [][]float64 {
				r.set(th)
				var ys [][]float64
				if err := r.each(false, func(tr *analysis.Trace, _ [][]float64, n int) error {
					y := tr.Values[r.rv.out[0]].Data
					per := len(y) / n
					for s := 0; s < n; s++ {
						ys = append(ys, append([]float64(nil), y[s*per:(s+1)*per]...))
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				return ys
			}
			y := outs(th)
			jac := make([][][]float64, len(y)) // [sample][component][param]
			for s := range jac {
				jac[s] = make([][]float64, len(y[s]))
				for p := range jac[s] {
					jac[s][p] = make([]float64, nb)
				}
			}
			for b := 0; b < nb; b++ {
				tp := append([]float64(nil), th...)
				tp[b] += h
				yp := outs(tp)
				fp, err := r.objective(false)
				if err != nil {
					t.Fatal(err)
				}
				tp[b] -= 2 * h
				ym := outs(tp)
				fm, err := r.objective(false)
				if err != nil {
					t.Fatal(err)
				}
				fdGrad[b] = (fp - fm) / (2 * h)
				for s := range y {
					for p := range y[s] {
						jac[s][p][b] = (yp[s][p] - ym[s][p]) / (2 * h)
					}
				}
			}
			r.set(th)
			tol.CheckClose(t, "gradient", grad, fdGrad, 1e-5, 1e-9)
			// G over all samples, and over the first batch alone (the
			// matrix-free refit's curvature samples when there are more).
			want := make([]float64, nb*nb)
			wantSub := make([]float64, nb*nb)
			const sub = 9 // one batch (withLimits above)
			for s := range y {
				k := len(y[s])
				hm := make([]float64, k*k)
				if r.rv.kl {
					p := make([]float64, k)
					logSoftmax(p, y[s])
					for a := range p {
						p[a] = math.Exp(p[a])
					}
					for a := 0; a < k; a++ {
						for c := 0; c < k; c++ {
							hm[a*k+c] = -p[a] * p[c]
						}
						hm[a*k+a] += p[a]
					}
				} else {
					for a := 0; a < k; a++ {
						hm[a*k+a] = 2
					}
				}
				for b1 := 0; b1 < nb; b1++ {
					for b2 := b1; b2 < nb; b2++ {
						var v float64
						for a := 0; a < k; a++ {
							for c := 0; c < k; c++ {
								v += jac[s][a][b1] * hm[a*k+c] * jac[s][c][b2]
							}
						}
						want[b1*nb+b2] += v / float64(e.n)
						if s < sub {
							wantSub[b1*nb+b2] += v / sub
						}
					}
				}
			}
			upper := func(m []float64) []float64 {
				var u []float64
				for b1 := 0; b1 < nb; b1++ {
					u = append(u, m[b1*nb+b1:(b1+1)*nb]...)
				}
				return u
			}
			tol.CheckClose(t, "Gauss-Newton matrix", upper(g), upper(want), 1e-5, 1e-8)

			// Matrix-free products and CG.
			full := mat.NewSymDense(nb, append([]float64(nil), g...))
			v := make([]float64, nb)
			for b := range v {
				v[b] = math.Sin(float64(b) + 1)
			}
			gv, err := r.gv(v)
			if err != nil {
				t.Fatal(err)
			}
			wantGv := mat.NewVecDense(nb, nil)
			wantGv.MulVec(full, mat.NewVecDense(nb, v))
			tol.CheckClose(t, "G v", gv, wantGv.RawVector().Data, 1e-9, 1e-12)

			// One Lanczos basis serves every damping: each solution is
			// the direct one's, to the 1e-6 relative residual it stops at
			// (for the smallest damping; larger ones converge faster).
			// 50 vectors, more than nb: the basis can span the space.
			free := &solve.Lanczos{Mul: r.gv, Dim: 50, Scale: 0.7}
			neg := make([]float64, nb)
			for b := range neg {
				neg[b] = -grad[b]
			}
			for _, mu := range []float64{0.1, 1, 10, 1e3} {
				x, err := free.Solve(grad, mu)
				if err != nil {
					t.Fatal(err)
				}
				a := mat.NewSymDense(nb, nil)
				a.CopySym(full)
				for b := 0; b < nb; b++ {
					a.SetSym(b, b, a.At(b, b)+mu*0.7)
				}
				var xs mat.VecDense
				if err := xs.SolveVec(a, mat.NewVecDense(nb, neg)); err != nil {
					t.Fatal(err)
				}
				var ax mat.VecDense
				ax.MulVec(a, mat.NewVecDense(nb, x))
				var rn, gn float64
				for b := range grad {
					rn += (ax.AtVec(b) + grad[b]) * (ax.AtVec(b) + grad[b])
					gn += grad[b] * grad[b]
				}
				if math.Sqrt(rn) > 2e-6*math.Sqrt(gn) {
					t.Errorf("damping %g: residual %g, gradient %g", mu, math.Sqrt(rn), math.Sqrt(gn))
				}
				tol.CheckClose(t, fmt.Sprintf("solution at damping %g", mu), x, xs.RawVector().Data, 1e-3, 1e-9)
			}
			if free.Basis() > nb {
				t.Errorf("%d Lanczos vectors for %d parameters", free.Basis(), nb)
			}

			// Curvature from the first batch only.
			oc := ecpCurvSamples
			ecpCurvSamples = sub
			t.Cleanup(func() { ecpCurvSamples = oc })
			if _, _, err := r.gradient(); err != nil { // keeps the curvature samples' traces
				t.Fatal(err)
			}
			if r.curvN != sub {
				t.Fatalf("curvature from %d samples, want %d", r.curvN, sub)
			}
			gvSub, err := r.gv(v)
			if err != nil {
				t.Fatal(err)
			}
			wantGvSub := mat.NewVecDense(nb, nil)
			wantGvSub.MulVec(mat.NewSymDense(nb, wantSub), mat.NewVecDense(nb, v))
			tol.CheckClose(t, "G v on the curvature samples", gvSub, wantGvSub.RawVector().Data, 1e-5, 1e-8)
			// The assembled G too; the gradient and objective stay over
			// all samples.
			linSub, gradSub, fSub, err := r.linearizeFull()
			if err != nil {
				t.Fatal(err)
			}
			tol.CheckClose(t, "Gauss-Newton matrix on the curvature samples", upper(linSub.(*solve.Dense).Matrix()), upper(wantSub), 1e-5, 1e-8)
			tol.CheckClose(t, "gradient with curvature samples", gradSub, grad, 1e-12, 1e-15)
			if !tol.Near(fSub, f, 1e-12, 0) {
				t.Errorf("objective with curvature samples %g, want %g", fSub, f)
			}
		})
	}
}

// TestECPlusRefit: the refit lowers the objective, assembled or
// matrix-free, and changes nothing when the objective is already 0.
func TestECPlusRefit(t *testing.T) {
	cases := []struct {
		name     string
		head     onnxio.OpKind
		task     analysis.Task
		jac      float64
		sparsity float64
		lanczos  bool // the assembled matrix solved by Lanczos
	}{
		{"regression", -1, analysis.TaskRegression, 5e7, 0.6, false},
		{"regression Lanczos", -1, analysis.TaskRegression, 5e7, 0.6, true},
		{"classifier Lanczos", -1, analysis.TaskClassification, 5e7, 0.6, true},
		{"regression matrix-free", -1, analysis.TaskRegression, 0, 0.6, false},
		{"classifier", -1, analysis.TaskClassification, 5e7, 0.6, false},
		{"softmax matrix-free", onnxio.OpSoftmax, analysis.TaskClassification, 0, 0.6, false},
		{"zero sparsity", -1, analysis.TaskRegression, 5e7, 0, false},
		{"zero sparsity matrix-free", onnxio.OpSoftmax, analysis.TaskClassification, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withLimits(t, 9, 1<<25, tc.jac)
			if tc.lanczos {
				oc := ecpCholeskyMax
				ecpCholeskyMax = 0
				t.Cleanup(func() { ecpCholeskyMax = oc })
			}
			e, cur, r := refitFixture(t, tc.head, tc.task, tc.sparsity)
			f0, err := r.objective(false)
			if err != nil {
				t.Fatal(err)
			}
			th0 := r.get()
			if err := e.refit(cur, 2); err != nil {
				t.Fatal(err)
			}
			r2, _ := newRefitter(e, cur)
			f1, err := r2.objective(false)
			if err != nil {
				t.Fatal(err)
			}
			th1 := r2.get()
			if tc.sparsity == 0 {
				if f0 != 0 {
					t.Fatalf("objective %g at zero sparsity, want 0", f0)
				}
				tol.CheckClose(t, "biases", th1, th0, 0, 0)
				return
			}
			if !(f1 < f0) {
				t.Errorf("objective %g after the refit, %g before: want lower", f1, f0)
			}
		})
	}
}

// TestObjectiveBelow: an evaluation stops at its bound with +Inf and is
// exact below it.
func TestObjectiveBelow(t *testing.T) {
	withLimits(t, 5, 1<<25, 5e7)
	_, _, r := refitFixture(t, -1, analysis.TaskRegression, 0.6)
	f, err := r.objective(false)
	if err != nil || !(f > 0) {
		t.Fatalf("objective %g, %v", f, err)
	}
	for _, tc := range []struct {
		bound float64
		want  float64
	}{{f * 2, f}, {f, f}, {f * 0.999, math.Inf(1)}, {0, math.Inf(1)}} {
		got, err := r.objectiveBelow(true, tc.bound)
		if err != nil || got != tc.want {
			t.Errorf("bound %g: %g (%v), want %g", tc.bound, got, err, tc.want)
		}
	}
}

// TestECPlusRefitNoProgress: when no damping lowers the objective the
// refit keeps the biases it had.
func TestECPlusRefitNoProgress(t *testing.T) {
	withLimits(t, 9, 1<<25, 5e7)
	e, cur, r := refitFixture(t, -1, analysis.TaskRegression, 0.6)
	// Two full refits converge; a third finds (almost) nothing and must
	// never increase the objective.
	for i := 0; i < 3; i++ {
		f0, _ := r.objective(false)
		if err := e.refit(cur, 4); err != nil {
			t.Fatal(err)
		}
		f1, _ := r.objective(false)
		if f1 > f0 {
			t.Fatalf("refit %d raised the objective from %g to %g", i, f0, f1)
		}
	}
}
