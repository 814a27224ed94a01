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
// mean_g e_i)^2 (the error the bias fix leaves, EC's first-order output
// error), summed over at most reconTestMax of the rows, so that a layer
// the test rejects costs a fraction of a solve; then it is solved again
// on all samples and all rows.

// reconHoldout: every reconHoldout-th sample is held out for the decision.
const reconHoldout = 5

// reconExactFlops bounds the Cholesky factorisations of a layer's rows,
// sum_i (|K_i|+1)^3 / 3 multiply-adds: above it (wide layers at moderate
// sparsity: 1024 rows of 500 kept weights are 4e10) the rows are solved
// together by preconditioned conjugate gradients, whose every iteration is
// one matrix product with the Gram matrix. A variable for the tests.
var reconExactFlops = 5e8

// Conjugate gradients: at most reconCGIter iterations, stopping when every
// row's residual is below reconCGTol of its right-hand side, with the
// reconCGDeflate largest eigen-directions of the scaled Gram matrix
// deflated in the preconditioner (solve.MaskedOptions.CGDeflate): on the
// 784-1024-1024-10 MLP at 50% ten such iterations leave lower residuals
// (0.1 and 0.01 on its two wide layers) than twenty with Jacobi alone
// (0.1 and 0.03), for half the products with the Gram matrix. The
// systems are not solved to convergence: the iterations act as a
// regularisation too, and more of them (14) fitted the calibration
// samples closer without lowering the test loss.
var (
	reconCGIter    = 10
	reconCGTol     = 1e-3
	reconCGDeflate = 16
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
	// Buffers of this layer's solves (the held-out test, then the whole
	// layer), not kept for the next layer: on a 4096-wide layer they are
	// hundreds of MB, which would be live during the next layer's passes.
	bufs := &reconBufs{}
	gram := grow(&bufs.gram, m*m)
	clear(gram)
	augFit := reconAug(rd.ac, n, in, fit, &bufs.augFit)
	reconGram(augFit, m, len(fit), gram)
	lambda := reconLambda(gram, in, e.eo.ReconDamp)
	opts := maskedOptions()
	opts.Scratch = &bufs.cg
	why := ""
	var augHold []float64
	if mode == ReconAuto {
		if len(hold) == 0 || len(fit) == 0 {
			return false, "reconstruction: too few samples to decide"
		}
		// The decision is taken on a deterministic subset of the rows,
		// solved as the whole layer would be: each row is its own
		// system, so the subset's solutions are those rows' solutions,
		// and a layer the test rejects costs a fraction of one solve.
		rows := reconTestRows(out)
		ns := len(rows)
		cs := make([]float64, m*ns)
		reconCross(augFit, rd.e, n, m, fit, rows, cs, &bufs.eg)
		ps := make([]bool, ns*in)
		for k, i := range rows {
			copy(ps[k*in:(k+1)*in], pruned[i*in:(i+1)*in])
		}
		xs := make([]float64, ns*m)
		so := opts
		so.Flops = solve.MaskedFlops(out, in, pruned)
		how := solve.Masked(gram, cs, ns, in, ps, lambda, xs, so)
		before := weightedErr(rd, in, rows, hold, nil)
		after := weightedErr(rd, in, rows, hold, xs)
		of := ""
		if ns < out {
			of = fmt.Sprintf(", on %d of %d rows", ns, out)
		}
		if !(after < before) {
			return false, fmt.Sprintf("reconstruction not applied (held-out output-weighted error %.4g, with it %.4g%s)", before, after, of)
		}
		why = fmt.Sprintf(" (held-out output-weighted error %.4g -> %.4g%s; %s)", before, after, of, how)
		augHold = reconAug(rd.ac, n, in, hold, &bufs.augHold)
		reconGram(augHold, m, len(hold), gram)
		lambda = reconLambda(gram, in, e.eo.ReconDamp)
	}
	// The cross products in the order the samples went into gram.
	c := grow(&bufs.c, m*out)
	clear(c)
	reconCross(augFit, rd.e, n, m, fit, nil, c, &bufs.eg)
	reconCross(augHold, rd.e, n, m, hold, nil, c, &bufs.eg)
	x := grow(&bufs.x, out*m)
	clear(x)
	how := solve.Masked(gram, c, out, in, pruned, lambda, x, opts)
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
	xw := c[:out*in] // c ([in+1, out]) is spent
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

// reconTestRows are the rows the held-out decision solves: every
// ceil(out/reconTestMax)-th, at most reconTestMax of them.
func reconTestRows(out int) []int {
	step := max(1, (out+reconTestMax-1)/reconTestMax)
	rows := make([]int, 0, (out+step-1)/step)
	for i := 0; i < out; i += step {
		rows = append(rows, i)
	}
	return rows
}

// reconTestMax is how many rows the held-out decision solves at most: on
// a 4096-wide layer a thirty-second of the full solve. A variable for
// the tests.
var reconTestMax = 128

// reconBufs are a layer's reconstruction buffers: [A; 1] on the fitted
// samples serves the Gram matrix, the test's and the whole layer's cross
// products, and the solver's vectors serve every block of rows.
type reconBufs struct {
	gram, c, x, augFit, augHold, eg []float64
	cg                              solve.CGScratch
}

// reconAug gathers [A; 1] on the samples cols of ac ([in, n], one run per
// feature): [in+1, len(cols)], in *buf (nil: fresh).
func reconAug(ac []float64, n, in int, cols []int, buf *[]float64) []float64 {
	nc := len(cols)
	var aug []float64
	if buf == nil {
		aug = make([]float64, (in+1)*nc)
	} else {
		aug = grow(buf, (in+1)*nc)
	}
	for j := 0; j < in; j++ {
		src, dst := ac[j*n:(j+1)*n], aug[j*nc:(j+1)*nc]
		for p, r := range cols {
			dst[p] = src[r]
		}
	}
	for p := range cols {
		aug[in*nc+p] = 1
	}
	return aug
}

// reconGram adds aug aug^T to gram ([m, m]), aug being [A; 1] ([m, nc],
// reconAug's).
func reconGram(aug []float64, m, nc int, gram []float64) {
	if nc == 0 {
		return
	}
	A := blas64.General{Rows: m, Cols: nc, Stride: nc, Data: aug[:m*nc]}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, A, A, 1, blas64.General{Rows: m, Cols: m, Stride: m, Data: gram})
}

// reconCross adds [A; 1] e_R^T to c ([m, len(R)]) for the samples cols,
// aug being [A; 1] on them (reconAug's) and e [out, n], R the rows of e
// given (nil: all); the gathered rows of e go in *eg (nil: fresh). Every
// entry is a product over the samples alone, so a row's entries do not
// depend on which other rows are given.
func reconCross(aug, e []float64, n, m int, cols, rows []int, c []float64, eg *[]float64) {
	nc := len(cols)
	if nc == 0 {
		return
	}
	nr := len(rows)
	if rows == nil {
		nr = len(e) / max(n, 1)
	}
	var g []float64
	if eg == nil {
		g = make([]float64, nr*nc)
	} else {
		g = grow(eg, nr*nc)
	}
	for k := 0; k < nr; k++ {
		i := k
		if rows != nil {
			i = rows[k]
		}
		src, dst := e[i*n:(i+1)*n], g[k*nc:(k+1)*nc]
		for p, r := range cols {
			dst[p] = src[r]
		}
	}
	A := blas64.General{Rows: m, Cols: nc, Stride: nc, Data: aug[:m*nc]}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, A, blas64.General{Rows: nr, Cols: nc, Stride: nc, Data: g}, 1, blas64.General{Rows: m, Cols: nr, Stride: nr, Data: c})
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
// rows given of e and its samples cols, with the change x applied
// ([len(rows), in+1], row k that of rows[k]; nil: none).
func weightedErr(rd *resident, in int, rows, cols []int, x []float64) float64 {
	n := rd.rows
	m := in + 1
	var total float64
	ez := make([]float64, len(cols))
	for k, i := range rows {
		ei, gi := rd.e[i*n:(i+1)*n], rd.g[i*n:(i+1)*n]
		for p, r := range cols {
			ez[p] = ei[r]
		}
		if x != nil {
			xi := x[k*m : (k+1)*m]
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
	return solve.MaskedOptions{ExactFlops: reconExactFlops, CGIter: reconCGIter, CGTol: reconCGTol, CGDeflate: reconCGDeflate, CGBlockBytes: reconCGBlockBytes}
}

// reconCGBlockBytes bounds the conjugate gradients' vectors
// (MaskedOptions.CGBlockBytes): all rows of a 1024-wide layer fit in one
// block, a 4096-wide layer goes in blocks of 409 rows. A variable for
// the tests.
var reconCGBlockBytes = 64 << 20
