package ecplus

import (
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
)

// resident holds one layer's per-sample data transposed, one contiguous
// run of rows per feature or neuron, so that removing w_ij updates e_i with
// one axpy: centred a' [In, rows], e and g' [Out, rows].
type resident struct {
	ac, e, g []float64
	rows     int
	// f32: products in float32 (probes), on ac32, ac's float32 copy made
	// by seal once every row is in.
	f32  bool
	ac32 []float32

	ge, gr, acg, c []float64 // scratch of addResidualOn
	acg32          []float32 // scratch of costsCompact
}

func newResident(rows, out, in int) *resident {
	return &resident{ac: make([]float64, in*rows), e: make([]float64, out*rows), g: make([]float64, out*rows), rows: rows}
}

// reuseResident is newResident on the buffers of the previous layer's.
func (e *ecp) reuseResident(rows, out, in int) *resident {
	rd := e.rd
	if rd == nil {
		rd = &resident{}
		e.rd = rd
	}
	rd.f32 = e.gopt.Probes > 0
	rd.ac32 = rd.ac32[:0]
	rd.rows = rows
	rd.ac = grow(&rd.ac, in*rows)
	rd.g = grow(&rd.g, out*rows)
	rd.e = grow(&rd.e, out*rows)
	clear(rd.e) // put leaves it alone where e is zero
	return rd
}

// dropScratch lets go of the scratch of the residual products (grown
// again when next needed), before the reconstruction allocates its
// systems.
func (rd *resident) dropScratch() {
	rd.ge, rd.gr, rd.acg, rd.c, rd.acg32 = nil, nil, nil, nil, nil
}

// put stores a batch's rows from row r0 on; e nil is zero.
func (rd *resident) put(ac, e, g []float64, rows, r0, out, in int) {
	for r := 0; r < rows; r++ {
		for j, v := range ac[r*in : (r+1)*in] {
			rd.ac[j*rd.rows+r0+r] = v
		}
		for i := 0; i < out; i++ {
			rd.g[i*rd.rows+r0+r] = g[r*out+i]
			if e != nil {
				rd.e[i*rd.rows+r0+r] = e[r*out+i]
			}
		}
	}
}

// update subtracts the removed weights' contributions w_ij a'_j from e_i;
// a' = ac + shift, and the shifts' part is one constant per row. constCol
// (or nil) marks features whose ac is all zeros. When the round removed
// many weights (a round usually removes a quarter of a layer's budget)
// the update is one matrix product with the removed weights; one axpy
// per weight would stream a' and e through memory once per weight, which
// on a layer of millions of weights took most of ec+. scratch holds the
// product's [Out, In] weights (overwritten).
func (rd *resident) update(removed []prune.Scored, w, shift []float64, in int, constCol []bool, scratch *[]float64) {
	n := rd.rows
	if n == 0 {
		return
	}
	out := len(rd.e) / n
	rowShift := make([]float64, out)
	// The removals by row, in their order within a row: a stable
	// counting sort of their indices (not of copies of them, which on a
	// round of millions of removals take as much as the round's list).
	start := make([]int, out+1)
	for _, c := range removed {
		i, j := c.Pos/in, c.Pos%in
		rowShift[i] += w[c.Pos] * shift[j]
		if constCol == nil || !constCol[j] {
			start[i+1]++
		}
	}
	for i := 0; i < out; i++ {
		start[i+1] += start[i]
	}
	perm := make([]int32, start[out])
	next := slices.Clone(start[:out])
	for k, c := range removed {
		if i, j := c.Pos/in, c.Pos%in; constCol == nil || !constCol[j] {
			perm[next[i]] = int32(k)
			next[i]++
		}
	}
	byRow := func(i int) []int32 { return perm[start[i]:start[i+1]] }
	// One product over all rows (rows without removals add zeros) when
	// the round is dense enough for it to beat one axpy per weight: a
	// product costs out*in*n multiply-adds at full speed, the axpys
	// len(removed)*n at memory speed.
	if len(removed)*64 >= out*in && rd.f32 {
		// In float32 a block of rows at a time: the product's weights
		// take a block, not [Out, In] in float64.
		bs := min(blockRows(in), out)
		wr := grow(scratch, bs*in)
		for i0 := 0; i0 < out; i0 += bs {
			i1 := min(out, i0+bs)
			wb := wr[:(i1-i0)*in]
			clear(wb)
			some := false
			for i := i0; i < i1; i++ {
				for _, k := range byRow(i) {
					c := removed[k]
					wb[(i-i0)*in+c.Pos%in] = w[c.Pos]
					some = true
				}
			}
			if some {
				rd.gemm(false, i1-i0, n, in, -1, wb, rd.ac, rd.ac32, 1, rd.e[i0*n:i1*n])
			}
		}
	} else if len(removed)*64 >= out*in {
		wr := grow(scratch, out*in)
		clear(wr)
		for i := 0; i < out; i++ {
			for _, k := range byRow(i) {
				c := removed[k]
				wr[i*in+c.Pos%in] = w[c.Pos]
			}
		}
		rd.gemm(false, out, n, in, -1, wr, rd.ac, rd.ac32, 1, rd.e)
	} else {
		for i := 0; i < out; i++ {
			for _, k := range byRow(i) {
				c := removed[k]
				j := c.Pos % in
				blas64.Axpy(-w[c.Pos], blas64.Vector{N: n, Inc: 1, Data: rd.ac[j*n : (j+1)*n]}, blas64.Vector{N: n, Inc: 1, Data: rd.e[i*n : (i+1)*n]})
			}
		}
	}
	for i, ws := range rowShift {
		if ws != 0 {
			ei := rd.e[i*n : (i+1)*n]
			for r := range ei {
				ei[r] -= ws
			}
		}
	}
}

// seal makes the float32 copy of ac the products use in float32 mode.
func (rd *resident) seal() {
	if rd.f32 && len(rd.ac32) != len(rd.ac) {
		rd.ac32 = toF32(rd.ac32, rd.ac)
	}
}

// gemm sets c = alpha a op(b) + beta c, a being [m, k] and b rd.ac or a
// matrix of the same layout ([n, k] when transB, else [k, n]); b32, if
// not nil, is b in float32. With probes (rd.f32) the product runs in
// float32 and is added in float64: g is then an estimate whose sampling
// error dwarfs float32 rounding, and the products are most of ec+'s
// time on large layers. Exact derivatives keep float64 products.
func (rd *resident) gemm(transB bool, m, n, k int, alpha float64, a, b []float64, b32 []float32, beta float64, c []float64) {
	if m == 0 || n == 0 {
		return
	}
	tb, br, bc := blas.NoTrans, k, n
	if transB {
		tb, br, bc = blas.Trans, n, k
	}
	if !rd.f32 || k == 0 {
		blas64.Gemm(blas.NoTrans, tb, alpha,
			blas64.General{Rows: m, Cols: k, Stride: k, Data: a[:m*k]},
			blas64.General{Rows: br, Cols: bc, Stride: bc, Data: b[:br*bc]},
			beta, blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
		return
	}
	if len(b32) < k*n {
		b32 = nil // not sealed: convert b
	}
	analysis.MatMul32(false, transB, m, n, k, alpha, a, b, b32, beta, c)
}

func growF32(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

func toF32(dst []float32, src []float64) []float32 {
	dst = growF32(dst, len(src))
	for q, v := range src {
		dst[q] = float32(v)
	}
	return dst
}

// addResidual adds the residual sums of the resident data (se, e1 and,
// withSEA, sea).
func (rd *resident) addResidual(s *ecpSums, withSEA bool) {
	rd.addResidualOn(s, withSEA, nil, nil)
}

// addResidualOn is addResidual with sea computed only for the given rows
// and columns (nil: all); the other entries of sea are left at 0. The
// rounds need it only where a weight can still be removed.
func (rd *resident) addResidualOn(s *ecpSums, withSEA bool, rows, cols []int) {
	n := rd.rows
	ge := grow(&rd.ge, len(rd.e))
	for q, v := range rd.e {
		ge[q] = rd.g[q] * v
	}
	for i := 0; i < s.out; i++ {
		var se, e1 float64
		for r := 0; r < n; r++ {
			se += ge[i*n+r]
			e1 += rd.e[i*n+r]
		}
		s.se[i] += se
		s.e1[i] += e1
	}
	s.rows += n
	if !withSEA || n == 0 {
		return
	}
	if len(rows) == s.out && len(cols) == s.in {
		rows, cols = nil, nil // all of them: no gathering
	}
	if rows == nil && cols == nil {
		rd.gemm(true, s.out, s.in, n, 1, ge, rd.ac, rd.ac32, 1, s.sea)
		return
	}
	if len(rows) == 0 || len(cols) == 0 {
		return
	}
	// Gather the rows of ge and of ac (both one contiguous run per
	// neuron or feature), multiply, scatter.
	gr := grow(&rd.gr, len(rows)*n)
	for k, i := range rows {
		copy(gr[k*n:(k+1)*n], ge[i*n:(i+1)*n])
	}
	ac := grow(&rd.acg, len(cols)*n)
	for k, j := range cols {
		copy(ac[k*n:(k+1)*n], rd.ac[j*n:(j+1)*n])
	}
	c := grow(&rd.c, len(rows)*len(cols))
	rd.gemm(true, len(rows), len(cols), n, 1, gr, ac, nil, 0, c)
	for k, i := range rows {
		for m, j := range cols {
			s.sea[i*s.in+j] += c[k*len(cols)+m]
		}
	}
}

// moments adds the first pass's sums of the resident data: s0, s1, s2
// (withMoments), se and e1 (withResidual), sea (withSEA).
func (rd *resident) moments(s *ecpSums, withMoments, withResidual, withSEA bool) {
	n, out, in := rd.rows, s.out, s.in
	if !withResidual {
		s.rows += n
	} else {
		rd.addResidualOn(s, false, nil, nil)
	}
	if n == 0 || (!withMoments && !withSEA) {
		return
	}
	rd.seal()
	if withMoments {
		for i := 0; i < out; i++ {
			var s0 float64
			for _, v := range rd.g[i*n : (i+1)*n] {
				s0 += v
			}
			s.s0[i] += s0
		}
		rd.gemm(true, out, in, n, 1, rd.g, rd.ac, rd.ac32, 1, s.s1)
		ac2 := grow(&rd.acg, len(rd.ac))
		for q, v := range rd.ac {
			ac2[q] = v * v
		}
		rd.gemm(true, out, in, n, 1, rd.g, ac2, nil, 1, s.s2)
	}
	if withSEA {
		rd.gemm(true, out, in, n, 1, rd.ge[:out*n], rd.ac, rd.ac32, 1, s.sea) // g e, from addResidualOn
	}
}

// constant marks the features whose centred input is 0 in every sample:
// their variance and covariances are exactly 0, so they need no products.
func (rd *resident) constant(in int) []bool {
	c := make([]bool, in)
	for j := range c {
		c[j] = true
		for _, v := range rd.ac[j*rd.rows : (j+1)*rd.rows] {
			if v != 0 {
				c[j] = false
				break
			}
		}
	}
	return c
}
