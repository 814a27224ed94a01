package ecplus

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// Budget refinement (Options.Budgets = BudgetsRefined; experimental, not
// the default: docs/METHOD.md has the measurements). One-shot EC's global
// ranking prices every weight by the output error of removing it alone,
// so it equalises EC's first-order marginal costs across layers. Where
// that estimate is far from what a layer's removals cost once ec+ has
// selected them sequentially and reconstructed the layer, the global
// threshold can nearly empty a layer. The refinement measures that cost
// and moves budget away from the layers whose removals cost more than EC
// predicted.
//
// Model: near its budget k_l, layer l's true marginal cost is rho_l times
// EC's (the one-shot scores ranked there), so equal true marginal costs
// across layers are the global ranking of rho_l * score. rho_l comes from
// a probe: ec+'s sequential selection and reconstruction (one greedy
// round, no refit) on the first quarter of the calibration samples (at
// least one batch), each layer pruned at k_l - k_l/probeStep and at k_l on
// the same pruned upstream, the difference of its output-weighted errors
// after the best bias shift, sum_i sum_n g_i(n) (e_i(n) - mean_g e_i)^2 / N
// with the original network's g (EC's units), measured on the next batch
// of samples, which the probe's fits did not see. The upstream's error is
// common to both and cancels in the difference.

// Budget modes of Options.Budgets.
const (
	BudgetsOneShot = "one-shot" // EC's one-shot ranking (also "")
	BudgetsRefined = "refined"  // one-shot ranking corrected by a probe
)

// rhoSpread bounds each layer's correction factor: a trust region for a
// model fitted at one point of each cost curve and on a quarter of the
// samples.
const rhoSpread = 16.0

// rhoDamp is the power the measured ratios are raised to (see
// normaliseRho).
const rhoDamp = 0.5

// probeShare is the share of the calibration samples the probe runs on.
const probeShare = 4

// refineBudgets returns the removal counts and tied masks of the global
// ranking of rho_l * score, rho_l measured by the probe. It returns ks and
// tied unchanged when there is nothing to move: per-layer scope, or fewer
// than two layers that lose weights in the global ranking.
func refineBudgets(net *onnxio.Network, data analysis.Data, st *analysis.Stats, ec *analysis.Scores, opt prune.Options, eo Options, task analysis.Task, ks []int, tied map[int][]bool, logf func(string, ...any)) ([]int, map[int][]bool, error) {
	movable := movableLayers(net, ec, opt, ks)
	if eo.Budgets != BudgetsRefined || len(movable) < 2 {
		return ks, tied, nil
	}
	rho, err := probeCosts(net, data, st, ec, eo, task, ks, movable, logf)
	if err != nil {
		return nil, nil, fmt.Errorf("budget probe: %w", err)
	}
	scaled := &analysis.Scores{Method: ec.Method, Ties: ec.Ties, TieMean: ec.TieMean, Local: ec.Local, Layers: slices.Clone(ec.Layers)}
	for li, r := range rho {
		ls := ec.Layers[li]
		s := make([]float64, len(ls.Score))
		for q, v := range ls.Score {
			s[q] = v * r
		}
		scaled.Layers[li] = &analysis.LayerScores{Layer: ls.Layer, Score: s, Delta: ls.Delta}
	}
	_, nks, ntied, err := budgets(net, st, scaled, opt)
	if err != nil {
		return nil, nil, err
	}
	for _, li := range movable {
		logf("ec+: budget of layer %s: %d -> %d removed (measured cost %.3g x EC's estimate)", ec.Layers[li].Layer.Name, ks[li], nks[li], rho[li])
	}
	return nks, ntied, nil
}

// movableLayers are the layers whose budget the global ranking sets and
// the refinement may move: not tied (a tie keeps the one-shot selection),
// not ranked on their own (LayerSparsity, local scores, --skip), losing
// at least one weight.
func movableLayers(net *onnxio.Network, ec *analysis.Scores, opt prune.Options, ks []int) []int {
	if opt.Scope == prune.Layer || opt.NM != nil {
		return nil
	}
	fixed := map[*onnxio.Layer]bool{}
	for name := range opt.LayerSparsity {
		fixed[net.LayerByName(name)] = true
	}
	var idx []int
	for li, ls := range ec.Layers {
		l := ls.Layer
		_, local := ec.Local[l]
		if l.Tie != nil || ks[li] == 0 || local || fixed[l] {
			continue
		}
		idx = append(idx, li)
	}
	return idx
}

// probeCosts runs the probe and returns the factors of the movable
// layers' scores (keys of the map; see normaliseRho).
func probeCosts(net *onnxio.Network, data analysis.Data, st *analysis.Stats, ec *analysis.Scores, eo Options, task analysis.Task, ks []int, movable []int, logf func(string, ...any)) (map[int]float64, error) {
	po := eo
	po.Rounds, po.RefitSteps, po.Prep, po.Progress = 1, 0, nil, nil
	np := probeSamples(data.Len())
	sub := headData{data: data, n: np}
	held := tailData{data: data, from: np, n: min(data.Len(), np+ecpBatch) - np}
	e, err := newECP(net, sub, st, po, task, func(string, ...any) {})
	if err != nil {
		return nil, err
	}
	if err := e.origPass(); err != nil {
		return nil, fmt.Errorf("original network: %w", err)
	}
	cur := net.Clone()
	for _, l := range cur.Layers {
		l.Own64()
	}
	isMovable := map[int]bool{}
	for _, li := range movable {
		isMovable[li] = true
	}
	last := movable[len(movable)-1]
	rho := map[int]float64{}
	for li, ls := range st.Layers[:last+1] {
		if !isMovable[li] {
			if _, err := e.pruneLayer(cur, li, ks[li]); err != nil {
				return nil, fmt.Errorf("layer %q: %w", ls.Layer.Name, err)
			}
			e.dropLayer(li)
			continue
		}
		// The secant of the layer's cost curve below its budget: the
		// error with k and with k - dk removals, on the same pruned
		// upstream, whose own error cancels in the difference.
		l := cur.Ops[ls.Op].Layer
		k := ks[li]
		dk := max(1, k/probeStep)
		w0, b0 := slices.Clone(l.W), slices.Clone(l.B)
		var errs [2]float64
		for i, kk := range []int{k - dk, k} {
			if i > 0 {
				copy(l.W, w0)
				l.B = slices.Clone(b0)
			}
			if _, err := e.pruneLayer(cur, li, kk); err != nil {
				return nil, fmt.Errorf("layer %q: %w", ls.Layer.Name, err)
			}
			if errs[i], err = e.heldOutError(cur, li, held); err != nil {
				return nil, fmt.Errorf("layer %q: %w", ls.Layer.Name, err)
			}
		}
		e.dropLayer(li)
		slope := (errs[1] - errs[0]) / float64(dk)
		est := secant(ec.Layers[li].Score, k, dk)
		rho[li] = slope / est
		logf("ec+: budget probe: layer %s: marginal cost %.4g per weight, EC's %.4g", ls.Layer.Name, slope, est)
	}
	return normaliseRho(rho), nil
}

// probeStep: the probe measures the cost of a layer's last k/probeStep
// removals.
const probeStep = 8

// normaliseRho turns the measured ratios into the factors the scores are
// multiplied by: each ratio over their median, raised to the power
// rhoDamp, and never below 1, at most rhoSpread. Only layers whose
// removals cost more than EC predicted (relative to the median layer) are
// protected; the others keep their scores and take the budget that is
// moved, through the global threshold. The damping and the bound keep the
// move within what one measured point per cost curve supports: the probe
// runs one greedy round on fewer samples than the real pass, which
// reconstructs better. A ratio that is not finite and
// positive (a layer whose removals cost nothing measurable, or whose
// estimate is zero) counts as below the median.
func normaliseRho(rho map[int]float64) map[int]float64 {
	var rs []float64
	for _, r := range rho {
		if r > 0 && !math.IsInf(r, 0) {
			rs = append(rs, r)
		}
	}
	out := make(map[int]float64, len(rho))
	for li := range rho {
		out[li] = 1
	}
	if len(rs) == 0 {
		return out
	}
	slices.Sort(rs)
	med := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = math.Sqrt(rs[len(rs)/2-1] * rs[len(rs)/2])
	}
	for li, r := range rho {
		switch {
		case math.IsInf(r, 1):
			out[li] = rhoSpread
		case r > med:
			out[li] = min(math.Pow(r/med, rhoDamp), rhoSpread)
		}
	}
	return out
}

// secant is EC's estimate of the cost per weight of a layer's removals
// from k - dk to k: the mean of its scores ranked k - dk + 1 to k (NaN
// scores count as zero).
func secant(score []float64, k, dk int) float64 {
	s := 0.0
	prune.MarkSmallest([][]float64{score}, k, func(_, q int) {
		if v := score[q]; !math.IsNaN(v) {
			s += v
		}
	})
	prune.MarkSmallest([][]float64{score}, k-dk, func(_, q int) {
		if v := score[q]; !math.IsNaN(v) {
			s -= v
		}
	})
	return s / float64(dk)
}

// outputError is layer li's output-weighted error on cur against the
// original network after the best bias shift, per sample:
// sum_i sum_n g_i(n) (e_i(n) - mean_g e_i)^2 / N, g without lambda's
// flattening (EC's scores' weighting).
func (e *ecp) outputError(cur *onnxio.Network, li int) (float64, error) {
	out := e.st.Layers[li].Layer.Out
	mean := e.gMean[li]
	s0 := make([]float64, out) // sum g
	s1 := make([]float64, out) // sum g e
	s2 := make([]float64, out) // sum g e^2
	err := e.layerPass(cur, li, false, false, func(_, zc, z0, g []float64, rows, _ int) error {
		for r := 0; r < rows; r++ {
			for i := 0; i < out; i++ {
				q := r*out + i
				gi := g[q] - e.eo.Lambda*mean[i]
				d := zc[q] - z0[q]
				s0[i] += gi
				s1[i] += gi * d
				s2[i] += gi * d * d
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0.0
	for i := range s0 {
		if s0[i] > 0 {
			total += s2[i] - s1[i]*s1[i]/s0[i]
		}
	}
	return total / float64(max(e.n, 1)), nil
}

// heldOutError is outputError on the samples of held, which the probe's
// selection and reconstruction did not see (a least-squares fit's error on
// its own samples flatters wide layers), or on the probe's samples when
// there are no others.
func (e *ecp) heldOutError(cur *onnxio.Network, li int, held tailData) (float64, error) {
	if held.n <= 0 {
		return e.outputError(cur, li)
	}
	data, gc, zc, prev, n := e.data, e.gCache, e.zCache, e.prev, e.n
	defer func() { e.data, e.gCache, e.zCache, e.prev, e.n = data, gc, zc, prev, n }()
	// Without the caches and traces of the probe's samples, the pass
	// recomputes g and z0 of the original network on the held-out ones.
	e.data, e.gCache, e.zCache, e.prev, e.n = held, nil, nil, nil, held.n
	return e.outputError(cur, li)
}

// probeSamples is how many calibration samples the probe runs on: a
// quarter of n, in whole batches, at least one batch.
func probeSamples(n int) int {
	b := max(1, (n/probeShare+ecpBatch-1)/ecpBatch)
	return min(n, b*ecpBatch)
}

// headData is the first n samples of data, n a multiple of the batch size
// it is read with (or all of data).
type headData struct {
	data analysis.Data
	n    int
}

func (h headData) Len() int { return h.n }

var errHeadDone = errors.New("head done")

func (h headData) Each(batch int, f func(b analysis.Batch) error) error {
	err := h.data.Each(batch, func(b analysis.Batch) error {
		if b.Start >= h.n {
			return errHeadDone
		}
		if n, err := batchLen(b); err != nil {
			return err
		} else if b.Start+n > h.n {
			return fmt.Errorf("probe: batch %d..%d crosses the probe's %d samples", b.Start, b.Start+n-1, h.n)
		}
		return f(b)
	})
	if errors.Is(err, errHeadDone) {
		return nil
	}
	return err
}

// tailData is the n samples of data from sample from on, numbered from 0,
// from a multiple of the batch size it is read with.
type tailData struct {
	data    analysis.Data
	from, n int
}

func (t tailData) Len() int { return t.n }

func (t tailData) Each(batch int, f func(b analysis.Batch) error) error {
	err := t.data.Each(batch, func(b analysis.Batch) error {
		if b.Start < t.from {
			return nil
		}
		if b.Start >= t.from+t.n {
			return errHeadDone
		}
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		if b.Start+n > t.from+t.n {
			return fmt.Errorf("probe: batch %d..%d crosses the held-out samples' end %d", b.Start, b.Start+n-1, t.from+t.n)
		}
		b.Start -= t.from
		return f(b)
	})
	if errors.Is(err, errHeadDone) {
		return nil
	}
	return err
}
