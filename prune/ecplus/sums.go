package ecplus

import (
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune/internal/solve"
)

// ecpSums are one layer's g'-weighted sums over the samples (rows). a' is
// shifted by the first batch's mean so that variances and covariances
// do not cancel.
type ecpSums struct {
	out, in int
	shift   []float64 // In
	s0      []float64 // Out: sum g
	s1, s2  []float64 // Out x In: sum g (a-shift), sum g (a-shift)^2
	se      []float64 // Out: sum g e
	sea     []float64 // Out x In: sum g e (a-shift)
	e1      []float64 // Out: sum e, unweighted (bias when sum g = 0)
	rows    int
	// The compact form (compact.go) keeps instead of s1, s2 and sea the
	// variance and s1/s0, [Out, In] in float32.
	v32, m32 []float32
	// seaPending: the compact form's first costs need sea on every
	// weight (the first pass had a residual).
	seaPending bool

	acBuf, ac2Buf, geBuf, eBuf []float64 // per-batch scratch
}

func newECPSums(out, in int) *ecpSums {
	s := newECPSumsSmall(out, in)
	s.s1, s.s2, s.sea = make([]float64, out*in), make([]float64, out*in), make([]float64, out*in)
	return s
}

// newECPSumsSmall is newECPSums without the [Out, In] sums (the compact
// form, or only the bias).
func newECPSumsSmall(out, in int) *ecpSums {
	return &ecpSums{out: out, in: in, s0: make([]float64, out), se: make([]float64, out), e1: make([]float64, out)}
}

// resetResidual clears the residual sums before a new pass over e.
func (s *ecpSums) resetResidual() {
	clear(s.se)
	clear(s.sea) // nil in the compact form
	clear(s.e1)
	s.rows = 0
}

// center returns a - shift, fixing shift on the first call.
func (s *ecpSums) center(a []float64, rows int) []float64 {
	if s.shift == nil {
		s.shift = analysis.ColumnMeans(a[:rows*s.in], s.in)
	}
	ac := grow(&s.acBuf, rows*s.in)
	for r := 0; r < rows; r++ {
		for j, v := range a[r*s.in : (r+1)*s.in] {
			ac[r*s.in+j] = v - s.shift[j]
		}
	}
	return ac
}

// addMoments adds s0, s1, s2 of a batch with centred inputs ac.
func (s *ecpSums) addMoments(ac, g []float64, rows int) {
	ac2 := grow(&s.ac2Buf, len(ac))
	for q, v := range ac {
		ac2[q] = v * v
	}
	for r := 0; r < rows; r++ {
		for i, v := range g[r*s.out : (r+1)*s.out] {
			s.s0[i] += v
		}
	}
	solve.AddTN(rows, s.out, s.in, g, ac, s.s1)
	solve.AddTN(rows, s.out, s.in, g, ac2, s.s2)
}

// addResidual adds se, e1 and (withSEA) sea of a batch.
func (s *ecpSums) addResidual(ac, e, g []float64, rows int, withSEA bool) {
	ge := grow(&s.geBuf, len(e))
	for q, v := range e {
		ge[q] = g[q] * v
	}
	for r := 0; r < rows; r++ {
		for i := 0; i < s.out; i++ {
			s.se[i] += ge[r*s.out+i]
			s.e1[i] += e[r*s.out+i]
		}
	}
	if withSEA {
		solve.AddTN(rows, s.out, s.in, ge, ac, s.sea)
	}
	s.rows += rows
}

// variance is the g-weighted sum of squared deviations of a'_j for neuron
// i (N times EC's importance per w^2); 0 for a neuron that never reaches
// the output.
func (s *ecpSums) variance(q int) float64 {
	i := q / s.in
	if s.s0[i] == 0 {
		return 0
	}
	v := s.s2[q] - s.s1[q]*s.s1[q]/s.s0[i]
	return math.Max(v, 0) // rounding
}

// covariance is sum_n g (e_i - mean e_i)(a'_j - mean a'_j).
func (s *ecpSums) covariance(q int) float64 {
	i := q / s.in
	if s.s0[i] == 0 {
		return 0
	}
	return s.sea[q] - s.se[i]*s.s1[q]/s.s0[i]
}

// costs is ec+'s removal cost w^2 Var_g(a') - 2c w Cov_g(e, a') of every
// weight (0 for neurons that never reach the output).
// It is variance and covariance inlined row by row (the same arithmetic),
// which on layers of millions of weights saves a division per weight.
func (s *ecpSums) costs(buf *[]float64, w []float64, c float64) []float64 {
	out := grow(buf, len(w))
	in := s.in
	for i := 0; i < s.out; i++ {
		row, wr := out[i*in:(i+1)*in], w[i*in:(i+1)*in]
		s0 := s.s0[i]
		if s0 == 0 {
			for j, wq := range wr {
				row[j] = wq*wq*0 - 2*c*wq*0
			}
			continue
		}
		se := s.se[i]
		s1r, s2r, sear := s.s1[i*in:(i+1)*in], s.s2[i*in:(i+1)*in], s.sea[i*in:(i+1)*in]
		for j, wq := range wr {
			s1 := s1r[j]
			v := math.Max(s2r[j]-s1*s1/s0, 0)
			cv := sear[j] - se*s1/s0
			row[j] = wq*wq*v - 2*c*wq*cv
		}
	}
	return out
}

// biasFix is the change of b_i that makes the g-weighted mean of the
// residual zero (the unweighted mean where g is zero throughout).
func (s *ecpSums) biasFix(i int) float64 {
	if s.s0[i] > 0 {
		return -s.se[i] / s.s0[i]
	}
	if s.rows > 0 {
		return -s.e1[i] / float64(s.rows)
	}
	return 0
}
