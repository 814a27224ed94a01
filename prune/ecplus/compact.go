package ecplus

import (
	"math"
)

// The compact form of a resident layer's per-weight sums, used with
// probes (rd.f32): g is then an estimate whose sampling error (about
// 1/sqrt(P) relative) dwarfs float32 rounding, and the products already
// run in float32. Instead of s1, s2, sea and the costs, four [Out, In]
// float64 arrays (512 MiB on a 4096x4096 layer), it keeps the variance,
// the weighted mean of the centred input and the costs in float32 (192
// MiB), and computes sea a block of rows at a time, straight into the
// costs of the round that reads it.

// compactBlock is the number of float64 values of a block of rows of an
// [Out, In] or [Out, rows] array.
var compactBlock = 1 << 21 // a variable so that tests can force several blocks

// blockRows is how many rows of width w a block holds (at least 1).
func blockRows(w int) int {
	return max(1, compactBlock/max(w, 1))
}

// momentsCompact is moments in compact form: s0 and, from s1 and s2
// computed a block of rows at a time, v32 (the variance, N times EC's
// importance per w^2) and m32 (s1/s0); se and e1 with withResidual.
func (rd *resident) momentsCompact(s *ecpSums, withResidual bool) {
	n, out, in := rd.rows, s.out, s.in
	if withResidual {
		rd.residualSums(s)
	} else {
		s.rows += n
	}
	s.v32 = make([]float32, out*in)
	s.m32 = make([]float32, out*in)
	if n == 0 {
		return
	}
	rd.seal()
	for i := 0; i < out; i++ {
		var s0 float64
		for _, v := range rd.g[i*n : (i+1)*n] {
			s0 += v
		}
		s.s0[i] += s0
	}
	// The squared inputs rounded as MatMul32 would round them.
	ac2 := make([]float32, len(rd.ac))
	for q, v := range rd.ac {
		ac2[q] = float32(v * v)
	}
	bs := min(blockRows(in), out)
	s1b, s2b := make([]float64, bs*in), make([]float64, bs*in)
	for i0 := 0; i0 < out; i0 += bs {
		i1 := min(out, i0+bs)
		m := i1 - i0
		rd.gemm(true, m, in, n, 1, rd.g[i0*n:i1*n], nil, rd.ac32, 0, s1b[:m*in])
		rd.gemm(true, m, in, n, 1, rd.g[i0*n:i1*n], nil, ac2, 0, s2b[:m*in])
		for i := i0; i < i1; i++ {
			s0 := s.s0[i]
			if s0 == 0 {
				continue // a neuron that never reaches the output: 0
			}
			v, mr := s.v32[i*in:(i+1)*in], s.m32[i*in:(i+1)*in]
			s1r, s2r := s1b[(i-i0)*in:(i-i0+1)*in], s2b[(i-i0)*in:(i-i0+1)*in]
			for j, s1 := range s1r {
				v[j] = float32(math.Max(s2r[j]-s1*s1/s0, 0))
				mr[j] = float32(s1 / s0)
			}
		}
	}
}

// residualSums adds se and e1 of the resident data, without sea.
func (rd *resident) residualSums(s *ecpSums) {
	n := rd.rows
	for i := 0; i < s.out; i++ {
		var se, e1 float64
		gi, ei := rd.g[i*n:(i+1)*n], rd.e[i*n:(i+1)*n]
		for r, v := range ei {
			se += gi[r] * v
			e1 += v
		}
		s.se[i] += se
		s.e1[i] += e1
	}
	s.rows += n
}

// costsCompact calls row(i, cost) for every row i that need(i) asks for,
// in order, with its weights' removal costs (valid during the call):
// w^2 Var_g(a') - 2c w Cov_g(e, a') (0 for neurons that never reach the
// output), Cov_g(e, a') = sea - se m32, sea being computed on the rows
// and columns given (all of them when all is set; rows in increasing
// order), a block of rows at a time, and taken as 0 elsewhere, as the
// non-compact rounds leave it. No [Out, In] array of costs is made: a
// round picks by row.
func (rd *resident) costsCompact(s *ecpSums, w []float64, c float64, all bool, rows, cols []int, need func(int) bool, row func(int, []float32)) {
	out, in, n := s.out, s.in, rd.rows
	if all {
		rows, cols = nil, nil
		if n > 0 {
			rows, cols = make([]int, out), make([]int, in)
			for i := range rows {
				rows[i] = i
			}
			for j := range cols {
				cols[j] = j
			}
		}
	}
	withSEA := n > 0 && len(rows) > 0 && len(cols) > 0
	// The columns' inputs in float32, one contiguous run per feature:
	// gathered when they are few, else all columns are multiplied and
	// the others ignored (a gathered copy would take up to the inputs'
	// size again).
	ac32, pick := rd.ac32, cols
	if len(cols)*2 > in {
		pick = nil
	} else if withSEA && len(cols) < in {
		ac32 = growF32(rd.acg32, len(cols)*n)
		rd.acg32 = ac32
		for k, j := range cols {
			copy(ac32[k*n:(k+1)*n], rd.ac32[j*n:(j+1)*n])
		}
	}
	nc := len(cols)
	if pick == nil {
		nc = in
	}
	bs := min(blockRows(max(n, nc)), out)
	var ge, sea []float64
	if withSEA {
		ge = grow(&rd.gr, bs*n)
		sea = grow(&rd.c, bs*nc)
	}
	cost := make([]float32, in)
	var sel []int
	k := 0 // next of rows
	for i0 := 0; i0 < out; i0 += bs {
		i1 := min(out, i0+bs)
		// sea of the block's rows that are asked for and have it.
		sel = sel[:0]
		for ; k < len(rows) && rows[k] < i1; k++ {
			if i := rows[k]; withSEA && need(i) && s.s0[i] != 0 {
				gi, ei, gk := rd.g[i*n:(i+1)*n], rd.e[i*n:(i+1)*n], ge[len(sel)*n:(len(sel)+1)*n]
				for r, v := range ei {
					gk[r] = gi[r] * v
				}
				sel = append(sel, i)
			}
		}
		if withSEA && len(sel) > 0 {
			rd.gemm(true, len(sel), nc, n, 1, ge[:len(sel)*n], nil, ac32, 0, sea[:len(sel)*nc])
		}
		p := 0 // next of sel
		for i := i0; i < i1; i++ {
			if !need(i) {
				continue
			}
			wr := w[i*in : (i+1)*in]
			if s.s0[i] == 0 {
				for j, wq := range wr {
					cost[j] = float32(wq*wq*0 - 2*c*wq*0)
				}
				row(i, cost)
				continue
			}
			se := s.se[i]
			v, m := s.v32[i*in:(i+1)*in], s.m32[i*in:(i+1)*in]
			for j, wq := range wr {
				cost[j] = float32(wq*wq*float64(v[j]) - 2*c*wq*(0-se*float64(m[j])))
			}
			if p < len(sel) && sel[p] == i {
				sr := sea[p*nc : (p+1)*nc]
				for kk, j := range cols {
					at := kk
					if pick == nil {
						at = j
					}
					wq := wr[j]
					cost[j] = float32(wq*wq*float64(v[j]) - 2*c*wq*(sr[at]-se*float64(m[j])))
				}
				p++
			}
			row(i, cost)
		}
	}
}

// rowQuotas32 is rowQuotas on float32 scores: the k lowest by score, then
// flat index, counted per row. It selects by a radix select over the
// scores' order-preserving integer images, as prune.MarkSmallest does.
func rowQuotas32(score []float32, out, in, k int) []int {
	quota := make([]int, out)
	if k <= 0 {
		return quota
	}
	if k >= len(score) {
		for q := range score {
			quota[q/in]++
		}
		return quota
	}
	var counts [1 << 16]int
	var prefix, mask uint32
	rest := k
	for shift := 16; shift >= 0; shift -= 16 {
		clear(counts[:])
		for _, v := range score {
			if key := orderKey32(v); key&mask == prefix {
				counts[(key>>shift)&0xffff]++
			}
		}
		d := 0
		for ; counts[d] < rest; d++ {
			rest -= counts[d]
		}
		prefix |= uint32(d) << shift
		mask |= 0xffff << shift
	}
	for q, v := range score {
		key := orderKey32(v)
		if key < prefix {
			quota[q/in]++
		} else if key == prefix && rest > 0 {
			rest--
			quota[q/in]++
		}
	}
	return quota
}

// orderKey32 maps a float32 to a uint32 in the same order: -0 and +0
// together, every NaN last.
func orderKey32(v float32) uint32 {
	if v != v {
		return math.MaxUint32
	}
	if v == 0 {
		v = 0
	}
	b := math.Float32bits(v)
	if b>>31 != 0 {
		return ^b
	}
	return b | 1<<31
}
