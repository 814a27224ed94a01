package ecplus

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune/internal/solve"
)

// Above ecpCholeskyMax biases the assembled system is solved by Lanczos
// (solve.Scaled), not Cholesky: a factorisation per damping tried costs B^3/3
// (2.9 GFLOP for the 2058 biases of a 784-1024-1024-10 MLP, several per
// step), a Lanczos basis B^2 per vector, once per step. ecpKrylovFull
// bounds that basis; it stops earlier at a residual of 1e-6.
var (
	ecpCholeskyMax = 1024
	ecpKrylovFull  = 200
)

// Refit bounds: the Krylov dimension of the matrix-free solve, and the
// samples whose curvature (G, or the products G v) is used. The gradient
// and every objective use all samples; G, which only shapes the step,
// comes from the first whole batches that hold at least ecpCurvSamples
// of them (406 samples in two batches of 203 on a 784-1024-1024-10 MLP,
// whose Jacobian bounds the batch), as in Hessian-free optimisation
// (Martens 2010), so that it costs a fixed amount whatever the
// calibration size.
var (
	ecpKrylov      = 10
	ecpCurvSamples = 256
)

// ecpJacChunk bounds the output directions of one reverse pass of
// jacobian: directions x the widest value of the trace at most this many
// values (2 MB, one direction on a 256-sample batch of a 1024-wide MLP).
// The pass's cotangents are then buffers the heap recycles, where 16 MB
// ones per batch came from fresh memory, a page fault per 4 KB; the rows
// of a product, hence the Jacobian's bits, do not depend on the chunk.
const ecpJacChunk = 1 << 18

// jacobian adds the Jacobian [n*K, B] of a traced batch of n samples
// into j (rows from row0 on, zero on entry), row s*K+p being
// d y(s)_p / d theta: one reverse pass per output component, batched.
// A row of it is a row of the cotangents at a layer's output, so it is
// filled by contiguous copies; the Gram product takes it transposed.
func (r *refitter) jacobian(tr *analysis.Trace, ys []*analysis.Tensor, n int, j []float64, row0 int) error {
	k, nb := r.rv.k(), r.nb
	widest := 1
	for _, v := range tr.Values {
		if v != nil {
			widest = max(widest, v.Len())
		}
	}
	chunk := max(1, ecpJacChunk/widest)
	for p0 := 0; p0 < k; p0 += chunk {
		p1 := min(k, p0+chunk)
		cot := make([]*analysis.Tensor, len(ys))
		base := 0
		for o, y := range ys {
			per := r.rv.per[o]
			for p := max(p0, base); p < min(p1, base+per); p++ {
				if cot[o] == nil {
					cot[o] = analysis.Zeros(append([]int{p1 - p0}, y.Shape...)...)
				}
				for s := 0; s < n; s++ {
					cot[o].Data[(p-p0)*y.Len()+s*per+p-base] = 1
				}
			}
			base += per
		}
		res, err := analysis.VJP(r.view, tr, cot, r.z)
		if err != nil {
			return err
		}
		for li, l := range r.layers {
			c := res[r.z[li]].Data
			rows := len(c) / (p1 - p0) / l.Out
			rp := rows / n
			for q := 0; q < p1-p0; q++ {
				for s := 0; s < n; s++ {
					dst := j[(row0+s*k+p0+q)*nb+r.off[li] : (row0+s*k+p0+q)*nb+r.off[li]+l.Out]
					for pos := 0; pos < rp; pos++ {
						for i, x := range c[(q*rows+s*rp+pos)*l.Out : (q*rows+s*rp+pos+1)*l.Out] {
							dst[i] += x
						}
					}
				}
			}
		}
	}
	return nil
}

// linearizeFull computes the gradient and objective over all samples,
// and assembles the (generalised) Gauss-Newton matrix
// G = (1/S) sum_n J_n^T H_n J_n over the S curvature samples (see
// startCurvature); H is 2I for squared error and diag(p) - p p^T per softmax
// row for the KL.
func (r *refitter) linearizeFull() (solve.Damped, []float64, float64, error) {
	grad, f, err := r.gradient()
	if err != nil {
		return nil, nil, 0, err
	}
	nb, k := r.nb, r.rv.k()
	// G is kept from one linearisation to the next (the last step's is
	// done with), as is the gathered Jacobian: fresh memory costs page
	// faults.
	g := grow(&r.g, nb*nb)
	clear(g)
	samples := r.e.n
	if r.curv != nil {
		samples = r.curvN
	}
	alpha := 1 / float64(samples) // H = diag(p) - p p^T, or 2I for squared error
	if !r.rv.kl {
		alpha *= 2
	}
	// When small enough, the Jacobians of all batches are gathered and
	// their Gram product done once: fewer, larger products.
	var all []float64
	row := 0
	if samples*k*nb <= ecpGather {
		// Kept from one linearisation to the next (the same size).
		all = grow(&r.jac, samples*k*nb)
		clear(all)
	}
	visit := func(tr *analysis.Trace, _ [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		nk := n * k
		j, row0 := all, row
		if all == nil {
			j, row0 = make([]float64, nk*nb), 0
		} else if row+nk > samples*k {
			return fmt.Errorf("samples beyond the %d of the first pass", samples)
		}
		if err := r.jacobian(tr, ys, n, j, row0); err != nil {
			return err
		}
		jb := j[row0*nb : (row0+nk)*nb]
		if r.rv.kl {
			// KL: J^T (diag(p) - p p^T) J = sum_k m_k m_k^T with
			// m_k = sqrt(p_k) (J_k - p^T J), one softmax row at a time:
			// one product, not the difference of two large ones.
			c := r.rv.width
			y := ys[0].Data
			p := make([]float64, len(y))
			for rr := 0; rr*c < len(y); rr++ {
				logSoftmax(p[rr*c:(rr+1)*c], y[rr*c:(rr+1)*c])
			}
			for q, v := range p {
				p[q] = math.Exp(v)
			}
			mean := make([]float64, nb)
			for rr := 0; rr*c < nk; rr++ {
				clear(mean)
				for q := rr * c; q < (rr+1)*c; q++ {
					floats.AddScaled(mean, p[q], jb[q*nb:(q+1)*nb])
				}
				for q := rr * c; q < (rr+1)*c; q++ {
					jq, sp := jb[q*nb:(q+1)*nb], math.Sqrt(p[q])
					for b, m := range mean {
						jq[b] = sp * (jq[b] - m)
					}
				}
			}
		}
		if all == nil {
			solve.Gram(alpha, jb, nk, nb, g)
		}
		row += nk
		return nil
	}
	if r.curv != nil {
		for _, kt := range r.curv {
			if err := visit(kt.tr, nil, kt.n); err != nil {
				return nil, nil, 0, err
			}
		}
	} else if err := r.each(false, visit); err != nil {
		return nil, nil, 0, err
	}
	if all != nil {
		if row != samples*k {
			return nil, nil, 0, fmt.Errorf("the Jacobian has %d rows, want %d", row, samples*k)
		}
		solve.Gram(alpha, all, row, nb, g)
	}
	return solve.NewDense(g, nb), grad, f, nil
}

// gradient is the objective's gradient with respect to the biases and
// the objective, over all samples: one reverse pass per batch. The same
// pass keeps the traces of the curvature samples (see startCurvature).
func (r *refitter) gradient() ([]float64, float64, error) {
	grad := make([]float64, r.nb)
	var total float64
	keep := r.startCurvature()
	err := r.each(false, func(tr *analysis.Trace, y0 [][]float64, n int) error {
		keep(tr, n)
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		l, dy := r.rv.loss(ys, y0, true)
		total += l
		return r.pullToBiases(tr, dy, grad)
	})
	if err != nil {
		return nil, 0, err
	}
	r.endCurvature()
	for i := range grad {
		grad[i] /= float64(r.e.n)
	}
	return grad, total / float64(r.e.n), nil
}

// linearizeFree computes the gradient with one reverse pass per batch,
// then keeps the traces of the curvature samples for the products G v.
func (r *refitter) linearizeFree() (solve.Damped, []float64, float64, error) {
	grad, fobj, err := r.gradient()
	if err != nil {
		return nil, nil, 0, err
	}
	f := &solve.Lanczos{Mul: r.gv, Dim: ecpKrylov, Scale: 1}
	if gg := dot(grad, grad); gg > 0 {
		hg, err := r.gv(grad)
		if err != nil {
			return nil, nil, 0, err
		}
		if s := dot(grad, hg) / gg; s > 0 {
			f.Scale = s
		}
	}
	return f, grad, fobj, nil
}

// startCurvature prepares to keep the traces of the pruned network at the
// current biases on the curvature samples (the first whole batches that
// hold ecpCurvSamples, or as many as fit in memory), batch by batch through the returned
// function; endCurvature logs how it went. With none kept (even one batch
// does not fit) the curvature runs over all the data.
func (r *refitter) startCurvature() func(tr *analysis.Trace, n int) {
	r.curv, r.curvN, r.curvFull = nil, 0, false
	want := min(r.e.n, ecpCurvSamples)
	stored := 0
	return func(tr *analysis.Trace, n int) {
		if r.curvN >= want || r.curvFull {
			return
		}
		for _, v := range tr.Values {
			if v != nil {
				stored += v.Len()
			}
		}
		if stored*8 > r.e.limit {
			r.curvFull = true
			return
		}
		r.curv = append(r.curv, keptTrace{tr: tr, n: n})
		r.curvN += n
	}
}

func (r *refitter) endCurvature() {
	switch want := min(r.e.n, ecpCurvSamples); {
	case r.curv == nil:
		r.e.logf("ec+: refit curvature over all samples, one batch at a time (one batch's traces would not fit)")
	case r.curvN < want:
		r.e.logf("ec+: refit curvature from %d samples (the traces of %d would not fit)", r.curvN, want)
	}
}

// gv is G v = (1/S) sum_n J_n^T H_n J_n v over the curvature samples: J v
// by one forward pass seeded at every layer's output (the biases of
// layer l enter there), H applied per sample, then J^T by one reverse
// pass.
func (r *refitter) gv(v []float64) ([]float64, error) {
	out := make([]float64, r.nb)
	f := func(tr *analysis.Trace, _ [][]float64, n int) error {
		ys, err := r.outputs(tr, n)
		if err != nil {
			return err
		}
		seeds := make([]*analysis.Tensor, len(r.layers))
		for li, l := range r.layers {
			z := tr.Values[r.z[li]]
			seed := analysis.Zeros(append([]int{1}, z.Shape...)...)
			vl := v[r.off[li] : r.off[li]+l.Out]
			for q := 0; q < len(seed.Data); q += l.Out {
				copy(seed.Data[q:q+l.Out], vl)
			}
			seeds[li] = seed
		}
		jv, err := r.jvp(tr, seeds)
		if err != nil {
			return err
		}
		if r.rv.kl {
			c := r.rv.width
			lp := make([]float64, c)
			y, t := ys[0].Data, jv[0].Data
			for rr := 0; rr*c < len(y); rr++ {
				logSoftmax(lp, y[rr*c:(rr+1)*c])
				var pt float64
				for q := 0; q < c; q++ {
					pt += math.Exp(lp[q]) * t[rr*c+q]
				}
				for q := 0; q < c; q++ {
					t[rr*c+q] = math.Exp(lp[q]) * (t[rr*c+q] - pt)
				}
			}
		} else {
			for _, t := range jv {
				for q := range t.Data {
					t.Data[q] *= 2
				}
			}
		}
		return r.pullToBiases(tr, jv, out)
	}
	samples := r.e.n
	var err error
	if r.curv != nil {
		samples = r.curvN
		for _, kt := range r.curv {
			if err = f(kt.tr, nil, kt.n); err != nil {
				break
			}
		}
	} else {
		err = r.each(false, f)
	}
	for i := range out {
		out[i] /= float64(samples)
	}
	return out, err
}

// pullToBiases adds the VJP of the output cotangents cot (one direction)
// with respect to every refitted bias to dst: the cotangent at each
// layer's output, summed over its rows (a bias is shared by all rows).
func (r *refitter) pullToBiases(tr *analysis.Trace, cot []*analysis.Tensor, dst []float64) error {
	res, err := r.vjp(tr, cot)
	if err != nil {
		return err
	}
	for li, l := range r.layers {
		sumRows(dst[r.off[li]:r.off[li]+l.Out], res[r.z[li]].Data, l.Out)
	}
	return nil
}

// vjp and jvp are the matrix-free refit's products: in float32 with
// probes (whoever chose probes traded exactness for speed already), else
// float64. Rounding in the step's direction cannot make the refit worse:
// a step is kept only if the objective, always in float64, drops.
func (r *refitter) vjp(tr *analysis.Trace, cot []*analysis.Tensor) (map[int]*analysis.Tensor, error) {
	if r.e.gopt.Probes > 0 {
		return analysis.VJP32(r.view, tr, cot, r.z)
	}
	return analysis.VJP(r.view, tr, cot, r.z)
}

func (r *refitter) jvp(tr *analysis.Trace, seeds []*analysis.Tensor) ([]*analysis.Tensor, error) {
	if r.e.gopt.Probes > 0 {
		return analysis.JVPSum32(r.view, tr, r.z, seeds)
	}
	return analysis.JVPSum(r.view, tr, r.z, seeds)
}

// sumRows adds a cotangent [P=1, rows, Out] at a layer's output, summed
// over rows, into g (a bias is shared by all rows).
func sumRows(g []float64, c []float64, out int) {
	for r := 0; r*out < len(c); r++ {
		for i, v := range c[r*out : (r+1)*out] {
			g[i] += v
		}
	}
}

func dot(a, b []float64) float64 {
	var s float64
	for i, x := range a {
		s += x * b[i]
	}
	return s
}
