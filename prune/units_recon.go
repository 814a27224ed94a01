package prune

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// reconRidge is the ridge added to the kept units' covariance, relative
// to its mean diagonal: calibration sets are often smaller than the
// number of kept units, and near-collinear units (saturated tanh) make the
// covariance singular.
const reconRidge = 1e-2

// reconstruct replaces the removed units of each group, in op order, by
// their least-squares prediction from the kept units instead of their
// means: with centred covariances C over the calibration rows of the
// network as it is (earlier groups already reconstructed),
// B = (C_KK + ridge)^-1 C_KR, the consumer's kept columns gain
// W'_R B^T and its bias W'_R (m_R - B^T m_K). Units the kept ones cannot
// predict keep their mean (B = 0 is the mean substitution). work's
// consumers must still hold the removed units' columns zeroed and the
// mean compensation in the bias, which this replaces.
func reconstruct(work *onnxio.Network, groups []*analysis.UnitGroup, removed [][]bool, means [][]float64, orig [][]float64, data analysis.Data, batch int) error {
	for gi, g := range groups {
		var keep, rem []int
		for j, r := range removed[gi] {
			if r {
				rem = append(rem, j)
			} else {
				keep = append(keep, j)
			}
		}
		if len(rem) == 0 {
			continue
		}
		h := g.Units
		cov := make([]float64, h*h)
		sum := make([]float64, h)
		rows := 0
		err := data.Each(batch, func(b analysis.Batch) error {
			tr, err := analysis.Run(work, b.Inputs)
			if err != nil {
				return err
			}
			a := tr.Values[g.Value].Data
			r := len(a) / h
			blas64.Gemm(blas.Trans, blas.NoTrans, 1,
				blas64.General{Rows: r, Cols: h, Stride: h, Data: a},
				blas64.General{Rows: r, Cols: h, Stride: h, Data: a}, 1,
				blas64.General{Rows: h, Cols: h, Stride: h, Data: cov})
			for q, v := range a {
				sum[q%h] += v
			}
			rows += r
			return nil
		})
		if err != nil {
			return fmt.Errorf("reconstructing units of %s: %w", g.Name(), err)
		}
		m := make([]float64, h)
		for j := range m {
			m[j] = sum[j] / float64(rows)
		}
		nk, nr := len(keep), len(rem)
		ckk := make([]float64, nk*nk)
		ckr := make([]float64, nk*nr)
		var diag float64
		for x, j := range keep {
			for y, k := range keep {
				ckk[x*nk+y] = cov[j*h+k]/float64(rows) - m[j]*m[k]
			}
			for y, k := range rem {
				ckr[x*nr+y] = cov[j*h+k]/float64(rows) - m[j]*m[k]
			}
			diag += ckk[x*nk+x]
		}
		ridge := reconRidge * diag / float64(nk)
		if ridge <= 0 {
			continue
		}
		for x := 0; x < nk; x++ {
			ckk[x*nk+x] += ridge
		}
		t, ok := lapack64.Potrf(blas64.Symmetric{Uplo: blas.Upper, N: nk, Stride: nk, Data: ckk})
		if !ok {
			continue // keep the mean substitution
		}
		lapack64.Potrs(t, blas64.General{Rows: nk, Cols: nr, Stride: nr, Data: ckr}) // ckr = B, nk x nr
		// The consumer from before any compensation of this group: its
		// original weights and bias plus nothing; columns of removed units
		// fold into the kept ones and the bias.
		l := g.Consumer
		w0 := orig[gi]
		w := l.Weights64()
		if l.W32 == nil {
			w = append([]float64(nil), w...)
		}
		b := make([]float64, l.Out)
		copy(b, l.B)
		for i := 0; i < l.Out; i++ {
			var shift float64
			for y, k := range rem {
				wik := w0[i*l.In+k]
				// Undo the mean compensation, then add the prediction's
				// constant part.
				shift -= wik * means[gi][k]
				c := m[k]
				for x, j := range keep {
					bjk := ckr[x*nr+y]
					w[i*l.In+j] += wik * bjk
					c -= bjk * m[j]
				}
				shift += wik * c
			}
			b[i] += shift
		}
		l.SetWeights(w)
		l.B = b
	}
	return nil
}
