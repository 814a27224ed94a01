package analysis

import (
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Tied weights. A tied weight's dense uses are layers of their own here:
// each gets its LayerStats and its scores, and selection sums them per
// stored element. An embedding use, Gather(E, ids) on E's rows, is the
// dense layer z = E^T onehot(id) without a bias: removing E[v,d] changes
// its output element d by -E[v,d] at every position that looks up row v,
// so its EC importance is the uncompensated form
//
//	I_vd = (E[v,d]^2 / N) * sum over positions p with id_p = v of g_d(p),
//
// with g_d(p) = ||dy/dz_d(p)||^2 of the Gather output, computed with the
// layers' g in the same pass. Its sums are GatherStats.

// GatherStats are the sums of one embedding use of a tied weight over the
// calibration samples.
type GatherStats struct {
	Tie    *onnxio.Tie
	Gather onnxio.TieGather
	Op     int       // index of the Gather op in Network.Ops
	Out    int       // value id of its output
	Ids    int       // value id of its indices
	S      []float64 // stored order [Rows, Cols]: sum of g over the positions looking up each row
}

// gatherStats lists the embedding uses of the prunable ties of net.
func gatherStats(net *onnxio.Network) []*GatherStats {
	var gs []*GatherStats
	for _, t := range net.Ties {
		if len(t.Layers) == 0 || !t.Layers[0].Prunable {
			continue
		}
		for _, g := range t.Gathers {
			op, _, ids := net.GatherOp(g)
			if op == nil {
				continue // not evaluated: it reaches no output
			}
			gs = append(gs, &GatherStats{Tie: t, Gather: g, Op: opIndex(net, op), Out: op.Out, Ids: ids, S: make([]float64, t.Size())})
		}
	}
	return gs
}

func opIndex(net *onnxio.Network, op *onnxio.Op) int {
	for i := range net.Ops {
		if &net.Ops[i] == op {
			return i
		}
	}
	return -1
}

// accumulate adds one batch: g is [positions, Cols] for the Gather's
// output, ids its indices (one per position).
func (gs *GatherStats) accumulate(tr *Trace, g []float64) {
	ids := tr.Values[gs.Ids].Data
	cols, rows := gs.Tie.Cols, gs.Tie.Rows
	for p, f := range ids {
		v := int(f)
		if v < 0 {
			v += rows
		}
		if v < 0 || v >= rows || (p+1)*cols > len(g) {
			continue // the evaluator refused such an index already
		}
		dst := gs.S[v*cols : (v+1)*cols]
		for d, x := range g[p*cols : (p+1)*cols] {
			dst[d] += x
		}
	}
}

// tieScores are the embedding uses' importance of each stored element of
// every tie, for the EC criteria (the uncompensated form: a lookup has no
// bias to shift).
func tieScores(st *Stats) []*TieScores {
	var out []*TieScores
	byTie := map[*onnxio.Tie]*TieScores{}
	for _, gs := range st.Gathers {
		ts := byTie[gs.Tie]
		if ts == nil {
			ts = &TieScores{Tie: gs.Tie, Score: make([]float64, gs.Tie.Size())}
			byTie[gs.Tie] = ts
			out = append(out, ts)
		}
		l := gs.Tie.Layers[0]
		for k, s := range gs.S {
			w := storedAt(l, k)
			ts.Score[k] += math.Max(0, w*w*s/float64(st.N))
		}
	}
	return out
}

// storedAt is the stored value of element k of a tied layer's weight
// (its effective weight without Gemm's alpha).
func storedAt(l *onnxio.Layer, k int) float64 {
	o, j := k/l.In, k%l.In // stored [out, in]
	if l.WeightLayout == onnxio.LayoutInOut {
		j, o = k/l.Out, k%l.Out // stored [in, out]
	}
	if l.Alpha == 0 {
		return 0
	}
	return l.At(o*l.In+j) / l.Alpha
}

// targets are the value ids gValues and lossCotangents compute g or dL/dz
// for: every prunable layer's output, then, with gathers, every embedding
// use's.
func (s *Stats) targets(net *onnxio.Network, gathers bool) []int {
	want := make([]int, 0, len(s.Layers)+len(s.Gathers))
	for _, ls := range s.Layers {
		want = append(want, net.Ops[ls.Op].Out)
	}
	if gathers {
		for _, gs := range s.Gathers {
			want = append(want, gs.Out)
		}
	}
	return want
}
