package prune

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune/internal/solve"
)

// SparseGPTOptions are the knobs of the SparseGPT baseline.
type SparseGPTOptions struct {
	PercDamp  float64 // damping: PercDamp times the mean diagonal of H
	BlockSize int     // columns whose mask is chosen together
	// Bias treats the bias as one more column of W (input 1), never
	// pruned, so that OBS's updates also move it.
	Bias bool
}

// DefaultSparseGPT is the reference implementation's setting.
var DefaultSparseGPT = SparseGPTOptions{PercDamp: 0.01, BlockSize: 128}

// SparseGPT is the baseline of Frantar and Alistarh (2023), the rule of
// the reference fasterprune in float64: layer by layer in graph order, on
// the network whose earlier layers are already pruned, H = sum_n a a^T of
// the layer's inputs (with a constant 1 appended when o.Bias), damped by
// PercDamp times its mean diagonal; its inverse's upper Cholesky factor U
// (H^-1 = U^T U); then block by block of BlockSize columns, the weights
// with the smallest w^2 / U_jj^2 in the block are masked, and column by
// column each masked weight is removed with OBS's update of the later
// columns of its row. budget fixes the number of weights removed from each
// layer (LayerPlan.Removed, e.g. Select's on EC scores), spread over the
// blocks in proportion to their widths so that the layer's count is exact.
func SparseGPT(net *onnxio.Network, data analysis.Data, st *analysis.Stats, budget *Plan, o SparseGPTOptions, logf func(string, ...any)) (*Plan, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if net == nil || data == nil || st == nil || budget == nil {
		return nil, errors.New("sparsegpt: missing network, data, statistics or budgets")
	}
	if o.BlockSize < 1 || o.PercDamp < 0 || math.IsNaN(o.PercDamp) {
		return nil, optErr("", "SparseGPTOptions: BlockSize %d and PercDamp %g: want BlockSize >= 1 and PercDamp >= 0", o.BlockSize, o.PercDamp)
	}
	if len(budget.Layers) != len(st.Layers) {
		return nil, fmt.Errorf("sparsegpt: %d layer budgets for %d layers", len(budget.Layers), len(st.Layers))
	}
	cur := net.Clone()
	plan := &Plan{Total: budget.Total}
	for li, ls := range st.Layers {
		l := cur.Ops[ls.Op].Layer
		k := budget.Layers[li].Removed
		lp := &LayerPlan{Layer: ls.Layer, Pruned: make([]bool, l.Params())}
		w := append([]float64(nil), l.Weights64()...)
		var b []float64
		if l.B != nil {
			b = append(b, l.B...)
		}
		if k > 0 {
			cols := l.In
			if o.Bias {
				cols++
			}
			h, err := inputGram(cur, data, ls.Op, l.In, o.Bias)
			if err != nil {
				return nil, fmt.Errorf("sparsegpt: layer %q: %w", l.Name, err)
			}
			wa := w
			if o.Bias {
				wa = make([]float64, l.Out*cols)
				for i := 0; i < l.Out; i++ {
					copy(wa[i*cols:], w[i*l.In:(i+1)*l.In])
					if b != nil {
						wa[i*cols+l.In] = b[i]
					}
				}
			}
			if err := sparseGPTLayer(wa, l.Out, cols, l.In, h, k, o.PercDamp, o.BlockSize, lp.Pruned); err != nil {
				return nil, fmt.Errorf("sparsegpt: layer %q: %w", l.Name, err)
			}
			if o.Bias {
				if b == nil {
					b = make([]float64, l.Out)
				}
				for i := 0; i < l.Out; i++ {
					copy(w[i*l.In:(i+1)*l.In], wa[i*cols:i*cols+l.In])
					b[i] = wa[i*cols+l.In]
				}
			}
		}
		for q, p := range lp.Pruned {
			if p {
				lp.Removed++
				w[q] = 0
			}
		}
		l.SetWeights(w)
		l.B = b
		lp.W, lp.B = w, b
		if o.Bias && b != nil {
			lp.BiasShift = make([]float64, len(b))
			for i := range b {
				lp.BiasShift[i] = b[i]
				if ls.Layer.B != nil {
					lp.BiasShift[i] -= ls.Layer.B[i]
				}
			}
		}
		plan.Layers = append(plan.Layers, lp)
		plan.Removed += lp.Removed
		logf("sparsegpt: layer %s: removed %d of %d", l.Name, lp.Removed, l.Params())
	}
	return plan, nil
}

// inputGram is sum_n a(n) a(n)^T of the inputs of op on net ([cols, cols],
// cols = in, or in+1 with a constant 1 appended when bias).
func inputGram(net *onnxio.Network, data analysis.Data, op, in int, bias bool) ([]float64, error) {
	cols := in
	if bias {
		cols++
	}
	h := make([]float64, cols*cols)
	pre := prefixTo(net, op, net.Ops[op].In[0])
	var aug []float64
	err := data.Each(passBatch, func(b analysis.Batch) error {
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		tr, err := analysis.Run(pre, b.Inputs)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		a := tr.Values[net.Ops[op].In[0]].Data
		rows := len(a) / in
		x := a
		if bias {
			x = grow(&aug, rows*cols)
			for r := 0; r < rows; r++ {
				copy(x[r*cols:], a[r*in:(r+1)*in])
				x[r*cols+in] = 1
			}
		}
		solve.AddTN(rows, cols, cols, x, x, h)
		return nil
	})
	return h, err
}

// sparseGPTLayer prunes k of the first prunable columns' weights of w
// ([out, cols], changed in place) with the reference fasterprune rule on
// H = h ([cols, cols], changed); columns from prunable on (the bias) are
// never masked. pruned ([out, prunable]) receives the mask.
func sparseGPTLayer(w []float64, out, cols, prunable int, h []float64, k int, percDamp float64, blockSize int, pruned []bool) error {
	// Dead inputs: their weights do nothing on the data (the reference
	// zeroes them and gives H a unit diagonal there).
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
	mean /= float64(cols)
	damp := percDamp * mean
	for j := 0; j < cols; j++ {
		h[j*cols+j] += damp
	}
	u, err := invCholUpper(h, cols)
	if err != nil {
		return err
	}
	w1 := make([]float64, out*blockSize)
	errs := make([]float64, out*blockSize)
	done := 0 // removals assigned to the blocks so far
	for i1 := 0; i1 < cols; i1 += blockSize {
		i2 := min(i1+blockSize, cols)
		bw := i2 - i1
		// The block's share of k: its prunable columns' part, rounded so
		// that the shares add up to k.
		end := min(i2, prunable)
		kb := 0
		if end > i1 {
			kb = int(math.Floor(float64(k)*float64(end)/float64(prunable)+0.5)) - done
		}
		done += kb
		for i := 0; i < out; i++ {
			copy(w1[i*bw:(i+1)*bw], w[i*cols+i1:i*cols+i2])
		}
		// Mask: the kb smallest w^2 / U_jj^2 over the block's prunable
		// columns, ties by position (row-major in the block).
		if pc := end - i1; kb > 0 && pc > 0 {
			score := make([]float64, out*pc)
			for i := 0; i < out; i++ {
				for j := 0; j < pc; j++ {
					d := u[(i1+j)*cols+i1+j]
					v := w1[i*bw+j]
					score[i*pc+j] = v * v / (d * d)
				}
			}
			MarkSmallest([][]float64{score}, kb, func(_, q int) {
				pruned[(q/pc)*prunable+i1+q%pc] = true
			})
		}
		for j := 0; j < bw; j++ {
			d := u[(i1+j)*cols+i1+j]
			urow := u[(i1+j)*cols+i1 : (i1+j)*cols+i2]
			for i := 0; i < out; i++ {
				errs[i*bw+j] = 0
				if i1+j >= prunable || !pruned[i*prunable+i1+j] {
					continue
				}
				e := w1[i*bw+j] / d
				errs[i*bw+j] = e
				row := w1[i*bw : (i+1)*bw]
				for jj := j; jj < bw; jj++ {
					row[jj] -= e * urow[jj]
				}
				row[j] = 0
			}
		}
		for i := 0; i < out; i++ {
			copy(w[i*cols+i1:i*cols+i2], w1[i*bw:(i+1)*bw])
		}
		if i2 < cols {
			// Later columns: W[:, i2:] -= Err U[i1:i2, i2:].
			blas64.Gemm(blas.NoTrans, blas.NoTrans, -1,
				blas64.General{Rows: out, Cols: bw, Stride: bw, Data: errs[:out*bw]},
				blas64.General{Rows: bw, Cols: cols - i2, Stride: cols, Data: u[i1*cols+i2:]},
				1, blas64.General{Rows: out, Cols: cols - i2, Stride: cols, Data: w[i2:]})
		}
	}
	return nil
}

// invCholUpper returns U, upper triangular with H^-1 = U^T U ([n, n], the
// strict lower triangle zero), for a symmetric positive definite h
// (overwritten).
func invCholUpper(h []float64, n int) ([]float64, error) {
	t, ok := lapack64.Potrf(blas64.Symmetric{Uplo: blas.Upper, N: n, Stride: n, Data: h})
	if !ok {
		return nil, errors.New("the damped input Gram matrix is not positive definite")
	}
	if _, ok = lapack64.Potri(blas64.Triangular{Uplo: blas.Upper, Diag: blas.NonUnit, N: n, Stride: n, Data: t.Data}); !ok {
		return nil, errors.New("the damped input Gram matrix is singular")
	}
	for i := 0; i < n; i++ {
		for j := 0; j < i; j++ {
			h[i*n+j] = h[j*n+i]
		}
	}
	t, ok = lapack64.Potrf(blas64.Symmetric{Uplo: blas.Upper, N: n, Stride: n, Data: h})
	if !ok {
		return nil, errors.New("the inverse of the damped input Gram matrix is not positive definite")
	}
	for i := 0; i < n; i++ {
		for j := 0; j < i; j++ {
			h[i*n+j] = 0
		}
	}
	return t.Data, nil
}
