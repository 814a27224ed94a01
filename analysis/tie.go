package analysis

import (
	"math"
	"sync"

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

// exactTie measures exact's score of every stored element of a tie on one
// batch: the element zeroed in every reader (each dense reader's bias
// shifted by its own delta*, the lookups reading 0), the network re-run
// from the first reader on. The whole measurement goes to the first dense
// use's score (the others get 0 there), so that selection's sum over the
// uses is the measurement.
func exactTie(net *onnxio.Network, tr *Trace, st *Stats, t *onnxio.Tie, out *Scores, deltas [][]float64, workers int) error {
	var uses []int // indices into st.Layers
	for k, ls := range st.Layers {
		if ls.Layer.Tie == t {
			uses = append(uses, k)
		}
	}
	if len(uses) == 0 {
		return nil
	}
	start := len(net.Ops)
	inv := make([][]int, len(uses)) // stored element -> weight position, per use
	for u, k := range uses {
		ls := st.Layers[k]
		start = min(start, ls.Op)
		inv[u] = make([]int, t.Size())
		for e := range inv[u] {
			inv[u][e] = -1 // outside the use's block
		}
		for q := 0; q < ls.Layer.Params(); q++ {
			inv[u][ls.Layer.StoredIndex(q)] = q
		}
	}
	var gatherData []int // value ids of the lookups' data
	for _, g := range t.Gathers {
		if op, data, _ := net.GatherOp(g); op != nil {
			start = min(start, opIndex(net, op))
			gatherData = append(gatherData, data)
		}
	}
	base := tr.Outputs()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A private copy of the network's ops with the readers' layers
			// in float64 of their own, and of the lookups' data in the
			// trace: each element is zeroed and restored in place.
			c := *net
			c.Ops = append([]onnxio.Op(nil), net.Ops...)
			layers := make([]*onnxio.Layer, len(uses))
			for u, k := range uses {
				ls := st.Layers[k]
				lc := *ls.Layer
				lc.W, lc.W32 = append([]float64(nil), ls.Layer.Weights64()...), nil
				if lc.B != nil {
					lc.B = append([]float64(nil), lc.B...)
				} else {
					lc.B = make([]float64, lc.Out)
				}
				c.Ops[ls.Op].Layer = &lc
				layers[u] = &lc
			}
			local := *tr
			local.Values = append([]*Tensor(nil), tr.Values...)
			for _, id := range gatherData {
				local.Values[id] = local.Values[id].Clone()
			}
			for e := range jobs {
				saved := make([]float64, 0, 2*len(uses)+len(gatherData))
				for u, l := range layers {
					q := inv[u][e]
					if q < 0 {
						saved = append(saved, 0, 0)
						continue
					}
					i := q / l.In
					saved = append(saved, l.W[q], l.B[i])
					l.W[q] = 0
					l.B[i] += deltas[uses[u]][q]
				}
				for _, id := range gatherData {
					saved = append(saved, local.Values[id].Data[e])
					local.Values[id].Data[e] = 0
				}
				tr2, err := RunFrom(&c, &local, start)
				if err == nil {
					var sum float64
					for o, y := range tr2.Outputs() {
						for p, v := range y.Data {
							d := v - base[o].Data[p]
							sum += d * d
						}
					}
					// One writer per element: the first use that reads it
					// (a block of the tensor is read by one use).
					for u := range uses {
						if inv[u][e] >= 0 {
							out.Layers[uses[u]].Score[inv[u][e]] += sum
							break
						}
					}
				}
				for u, l := range layers {
					if q := inv[u][e]; q >= 0 {
						l.W[q], l.B[q/l.In] = saved[2*u], saved[2*u+1]
					}
				}
				for g, id := range gatherData {
					local.Values[id].Data[e] = saved[2*len(uses)+g]
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for e := 0; e < t.Size(); e++ {
		jobs <- e
	}
	close(jobs)
	wg.Wait()
	return firstErr
}
