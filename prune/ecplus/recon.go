package ecplus

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/prune/internal/solve"
)

// Weight reconstruction: once a layer's mask is chosen, the surviving
// weights of each row and its bias are refitted by damped least squares to
// the original network's pre-activations on the pruned upstream,
//
//	min_{d, beta} ||A_K d + beta 1 + e_i||^2 + lambda ||d||^2,
//
// A_K the layer's centred inputs a' on the row's kept columns K, e_i = z'_i
// - z0_i the row's residual with the current weights, d the change of the
// kept weights (damped towards the weights EC kept, not towards zero) and
// beta an undamped intercept. A bias only cancels the mean of the removals'
// error; the kept weights of the row cancel its part correlated with the
// kept inputs. lambda is ReconDamp times the mean diagonal of the centred
// Gram matrix (SparseGPT's percdamp).
//
// The Gram matrix [A; 1][A; 1]^T is computed once per layer; each row then
// needs one Cholesky factorisation of size |K|+1 (rows share no mask).
//
// Where: the least squares match pre-activations, not the model's output,
// and on 1000 samples a 784-input row can overfit. So one fifth of the
// calibration samples (every fifth) is held out: the rows are solved on the
// rest and the layer is reconstructed only if that lowers the
// output-weighted error on the held-out samples, sum_n g_i(n) (e_i(n) -
// mean_g e_i)^2 summed over the rows (the error the bias fix leaves, EC's
// first-order output error); then it is solved again on all samples.

// reconHoldout: every reconHoldout-th sample is held out for the decision.
const reconHoldout = 5

// reconExactFlops bounds the Cholesky factorisations of a layer's rows,
// sum_i (|K_i|+1)^3 / 3 multiply-adds: above it (wide layers at moderate
// sparsity: 1024 rows of 500 kept weights are 4e10) the rows are solved
// together by preconditioned conjugate gradients, whose every iteration is
// one matrix product with the Gram matrix. A variable for the tests.
var reconExactFlops = 5e8

// Conjugate gradients: at most reconCGIter iterations, stopping when every
// row's residual is below reconCGTol of its right-hand side.
var (
	reconCGIter = 20
	reconCGTol  = 1e-3
)

// reconstruct refits the kept weights and the bias of layer l (w, b, with
// mask pruned) from the resident data, updating rd.e; shift is the
// centring of rd.ac. It returns whether the layer was changed and a line
// for the log.
func (e *ecp) reconstruct(rd *resident, w, b []float64, pruned []bool, shift []float64, out, in, rowsPer int) (bool, string) {
	n := rd.rows
	m := in + 1
	mode := e.eo.Recon
	if mode == "" {
		mode = ReconAuto
	}
	if mode == ReconOff || n == 0 {
		return false, ""
	}
	var fit, hold []int
	for r := 0; r < n; r++ {
		if mode == ReconAuto && (r/rowsPer)%reconHoldout == reconHoldout-1 {
			hold = append(hold, r)
		} else {
			fit = append(fit, r)
		}
	}
	gram := make([]float64, m*m)
	c := make([]float64, m*out)
	x := make([]float64, out*m)
	reconGram(rd.ac, rd.e, n, in, out, fit, gram, c)
	lambda := reconLambda(gram, in, e.eo.ReconDamp)
	why := ""
	if mode == ReconAuto {
		if len(hold) == 0 || len(fit) == 0 {
			return false, "reconstruction: too few samples to decide"
		}
		how := solve.Masked(gram, c, out, in, pruned, lambda, x, maskedOptions())
		before := weightedErr(rd, in, out, hold, nil)
		after := weightedErr(rd, in, out, hold, x)
		if !(after < before) {
			return false, fmt.Sprintf("reconstruction not applied (held-out output-weighted error %.4g, with it %.4g)", before, after)
		}
		why = fmt.Sprintf(" (held-out output-weighted error %.4g -> %.4g; %s)", before, after, how)
		reconGram(rd.ac, rd.e, n, in, out, hold, gram, c)
		lambda = reconLambda(gram, in, e.eo.ReconDamp)
	}
	how := solve.Masked(gram, c, out, in, pruned, lambda, x, maskedOptions())
	// Apply: w_ij += x_ij on kept columns; the intercept is in centred
	// coordinates, so the bias also takes -sum_j x_ij shift_j.
	for i := 0; i < out; i++ {
		xi := x[i*m : (i+1)*m]
		db := xi[in]
		for j, v := range xi[:in] {
			if v != 0 {
				w[i*in+j] += v
				db -= v * shift[j]
			}
		}
		b[i] += db
	}
	// e += X [A; 1]: one product, then the intercepts.
	xw := make([]float64, out*in)
	for i := 0; i < out; i++ {
		copy(xw[i*in:(i+1)*in], x[i*m:i*m+in])
	}
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas64.General{Rows: out, Cols: in, Stride: in, Data: xw},
		blas64.General{Rows: in, Cols: n, Stride: n, Data: rd.ac[:in*n]},
		1, blas64.General{Rows: out, Cols: n, Stride: n, Data: rd.e[:out*n]})
	for i := 0; i < out; i++ {
		v := x[i*m+in]
		ei := rd.e[i*n : (i+1)*n]
		for r := range ei {
			ei[r] += v
		}
	}
	return true, "reconstructed" + why + "; " + how
}

// reconGram adds [A; 1][A; 1]^T to gram and [A; 1] e^T to c for the
// samples cols of ac ([in, n], one run per feature) and e ([out, n]).
func reconGram(ac, e []float64, n, in, out int, cols []int, gram, c []float64) {
	m := in + 1
	nc := len(cols)
	if nc == 0 {
		return
	}
	aug := make([]float64, m*nc)
	for j := 0; j < in; j++ {
		src, dst := ac[j*n:(j+1)*n], aug[j*nc:(j+1)*nc]
		for p, r := range cols {
			dst[p] = src[r]
		}
	}
	for p := range cols {
		aug[in*nc+p] = 1
	}
	eg := make([]float64, out*nc)
	for i := 0; i < out; i++ {
		src, dst := e[i*n:(i+1)*n], eg[i*nc:(i+1)*nc]
		for p, r := range cols {
			dst[p] = src[r]
		}
	}
	A := blas64.General{Rows: m, Cols: nc, Stride: nc, Data: aug}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, A, A, 1, blas64.General{Rows: m, Cols: m, Stride: m, Data: gram})
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, A, blas64.General{Rows: out, Cols: nc, Stride: nc, Data: eg}, 1, blas64.General{Rows: m, Cols: out, Stride: out, Data: c})
}

// reconLambda is the damping: damp times the mean diagonal of the centred
// Gram matrix (without the intercept), at least a tiny positive value so
// that constant features keep the systems definite.
func reconLambda(gram []float64, in int, damp float64) float64 {
	m := in + 1
	var tr float64
	for j := 0; j < in; j++ {
		tr += gram[j*m+j]
	}
	lambda := damp * tr / float64(max(in, 1))
	if lambda <= 0 || math.IsNaN(lambda) {
		lambda = 1e-12
	}
	return lambda
}

// weightedErr is sum_i sum_n g_i(n) (e_i(n) - mean_g e_i)^2 over the
// samples cols of e with the change x applied ([out, in+1], nil: none).
func weightedErr(rd *resident, in, out int, cols []int, x []float64) float64 {
	n := rd.rows
	m := in + 1
	var total float64
	ez := make([]float64, len(cols))
	for i := 0; i < out; i++ {
		ei, gi := rd.e[i*n:(i+1)*n], rd.g[i*n:(i+1)*n]
		for p, r := range cols {
			ez[p] = ei[r]
		}
		if x != nil {
			xi := x[i*m : (i+1)*m]
			for j, v := range xi[:in] {
				if v == 0 {
					continue
				}
				aj := rd.ac[j*n : (j+1)*n]
				for p, r := range cols {
					ez[p] += v * aj[r]
				}
			}
			for p := range ez {
				ez[p] += xi[in]
			}
		}
		var s0, s1, s2 float64
		for p, r := range cols {
			g := gi[r]
			s0 += g
			s1 += g * ez[p]
			s2 += g * ez[p] * ez[p]
		}
		if s0 > 0 {
			total += math.Max(s2-s1*s1/s0, 0)
		}
	}
	return total
}

func maskedOptions() solve.MaskedOptions {
	return solve.MaskedOptions{ExactFlops: reconExactFlops, CGIter: reconCGIter, CGTol: reconCGTol}
}
