package ecplus

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// ecp is the state of one ec+ run.
//
// Memory and passes. The sequential stage needs, per layer, g-weighted
// sums over the samples of a', e, a'^2 and e*a'. g and z0 come from the
// original network: one pass computes them for every layer and keeps them
// when they fit (ecpMemLimit), otherwise each later pass recomputes them
// (GBatch with a fresh state, so probes are drawn again identically). A
// layer whose per-sample a', e and g fit is "resident": one pass fills
// them, and each greedy round updates e in memory (e_i -= w_ij a'_j for the
// removed weights) and recomputes the covariances from memory. Otherwise
// the layer is "streamed": every round costs one more pass that recomputes
// e = z' - z0 with the round's weights. Exact covariance updates without
// either would need sum_n g_i a'_j a'_k, an In x In matrix per neuron.
type ecp struct {
	net  *onnxio.Network
	data analysis.Data
	st   *analysis.Stats
	eo   Options
	task analysis.Task
	logf func(string, ...any)
	prog progress // Options.Progress

	gmode analysis.Derivatives // Stats.Mode GBatch runs with
	gopt  analysis.StatsOptions

	n       int         // calibration samples
	rowsPer []int       // per layer: rows of its input per sample
	s0      [][]float64 // per layer: sum_n g_i(n) of the original network
	gMean   [][]float64 // per layer: mean_n g_i(n)
	// Original network per layer, [rows, Out] in sample order, or nil.
	gCache, zCache []*vstore
	limit          int // bytes of each cache, see memLimit

	rv *refitView

	// Traces of cur from the last layer's first pass: the values before
	// op prevOp are final.
	prev   []keptTrace
	prevOp int
	// trimmed: traces were trimmed to what the next layer reads
	// (trimTraces), so the refit cannot replay them.
	trimmed bool
	clean   cleanPrefix // upstreamCleanSeq's memory

	rd *resident // buffers reused from layer to layer
}

func newECP(net *onnxio.Network, data analysis.Data, st *analysis.Stats, eo Options, task analysis.Task, logf func(string, ...any)) (*ecp, error) {
	e := &ecp{net: net, data: data, st: st, eo: eo, task: task, logf: logf, prog: progress{f: eo.Progress}, gmode: st.Mode}
	switch {
	case st.Mode.Exact():
	case st.Mode.Kind == analysis.DerivProbes:
		p := st.Mode.Probes
		if p <= 0 {
			return nil, fmt.Errorf("ec+: derivative mode %s without a probe count", st.Mode)
		}
		e.gopt.Probes = p
		e.gopt.Seed = eo.Seed
		logf("ec+: g estimated with %d random-sign probes (seed %d)", p, eo.Seed)
	default:
		// "loss" needs labels, which ec+ is not given; the mode is
		// chosen from the shapes on the first batch.
		e.gmode = analysis.Derivatives{}
		logf("ec+: the %s objective needs labels; ec+ weights by the output objective's g", st.Mode)
	}
	e.gopt.Objective = analysis.ObjOutput
	e.gopt.Task = task
	if task == TaskAuto {
		e.gopt.Task = analysis.TaskRegression // g is the output objective's either way
	}
	e.limit = memLimit(net)
	e.rv = newRefitView(net, task, e.limit)
	return e, nil
}

// shareWeights points the float32 weights of cur, a clone of net, at
// net's: ec+ never writes them in place (a layer it prunes gets weights
// of its own, Own64 then back32), so that its working copy costs the
// layers pruned so far, not a copy of the model.
func shareWeights(cur, net *onnxio.Network) {
	for i, l := range net.Layers {
		if l.W32 != nil && i < len(cur.Layers) && len(cur.Layers[i].W32) == len(l.W32) {
			cur.Layers[i].W32 = l.W32
		}
	}
}

// dropLayer lets go of the original network's g and z of layer li, which
// no later layer reads.
func (e *ecp) dropLayer(li int) {
	if e.gCache != nil {
		e.gCache[li] = nil
	}
	if e.zCache != nil {
		e.zCache[li] = nil
	}
}

// dropSelection lets go of what only the sequential selection needs: the
// original network's per-layer g and z, and the resident buffers. The
// refit matches outputs, which the view keeps (e.rv), and keeps traces of
// its own, which would come on top.
func (e *ecp) dropSelection() {
	e.gCache, e.zCache, e.rd = nil, nil, nil
}

// freshStats is a copy of the statistics for GBatch with its own random
// state, so that every pass draws the same probes.
func (e *ecp) freshStats() *analysis.Stats {
	return &analysis.Stats{Net: e.net, Layers: e.st.Layers, N: e.st.N, Mode: e.gmode, Objective: analysis.ObjOutput}
}

// chooseMode picks the cheaper exact way to get g under the output
// objective: reverse costs about K passes, forward about sum(Out).
func (e *ecp) chooseMode(tr *analysis.Trace, n int) analysis.Derivatives {
	k := 0
	for _, o := range tr.Outputs() {
		k += o.Len() / n
	}
	fwd := 0
	for li, ls := range e.st.Layers {
		fwd += ls.Layer.Out * e.rowsPer[li]
	}
	if fwd < k {
		return analysis.Derivatives{Kind: analysis.DerivForward}
	}
	return analysis.Derivatives{Kind: analysis.DerivReverse}
}

// ecpLayerResult is what pruning one layer produced.
type ecpLayerResult struct {
	pruned    []bool
	removed   int
	predicted float64
	resident  bool
	passes    int
}

// pruneLayer removes k weights of layer li of cur (whose earlier layers
// are final) and sets its bias; cur's layer ends up pruned and corrected.
func (e *ecp) pruneLayer(cur *onnxio.Network, li, k int) (*ecpLayerResult, error) {
	ls := e.st.Layers[li]
	l := cur.Ops[ls.Op].Layer
	out, in := l.Out, l.In
	if l.B == nil {
		l.B = make([]float64, out)
	}
	res := &ecpLayerResult{pruned: make([]bool, out*in)}
	rowsTotal := e.n * e.rowsPer[li]
	var rd *resident
	if rowsTotal*(in+2*out)*8 <= e.limit {
		rd = e.reuseResident(rowsTotal, out, in)
		res.resident = true
	}
	sums, err := e.firstPass(cur, li, k > 0, rd)
	if err != nil {
		return nil, err
	}
	res.passes++
	e.prog.add(1)
	// The compact form (compact.go): with probes, on a resident layer.
	compact := rd != nil && sums.v32 != nil
	if k > 0 {
		// One [Out, In] buffer serves the in-layer EC ranking, each
		// round's costs and the residual update's removed weights, in
		// turn: on a 4096x4096 layer each is 128 MiB. In the compact
		// form the ranking is float32, the costs are made a row at a
		// time as the rows are picked, and the update takes a block of
		// rows.
		var costBuf []float64
		var quota []int
		if compact {
			ec := make([]float32, out*in)
			for q, w := range l.W {
				ec[q] = float32(w * w * float64(sums.v32[q]))
			}
			quota = rowQuotas32(ec, out, in, k)
		} else {
			ec := grow(&costBuf, out*in)
			for q, w := range l.W {
				ec[q] = w * w * sums.variance(q)
			}
			quota = rowQuotas(ec, out, in, k)
		}
		// Where the compact form's next costs need sea: everywhere
		// (seaAll) or on seaRows x seaCols.
		seaAll := sums.seaPending
		var seaRows, seaCols []int
		rounds := e.eo.Rounds
		var constCol []bool
		if rd != nil {
			constCol = rd.constant(in)
			rd.seal()
		}
		// The largest round's removals, allocated once: growing the list
		// by appends would leave copies of up to its size behind.
		most := 0
		for t := 0; t < rounds; t++ {
			n := 0
			for _, qi := range quota {
				n += roundTake(qi, t, rounds)
			}
			most = max(most, n)
		}
		removed := make([]prune.Scored, 0, most)
		cs := make([]prune.Scored, 0, in)
		for t := 0; t < rounds; t++ {
			if t > 0 {
				e.prog.add(1) // round t-1 is done
			}
			removed = removed[:0]
			// pick takes row i's share of the round by the costs of its
			// weights, r64 or (compact) r32.
			pick := func(i int, r64 []float64, r32 []float32) {
				take := roundTake(quota[i], t, rounds)
				cs = cs[:0]
				for j := 0; j < in; j++ {
					if q := i*in + j; !res.pruned[q] {
						sc := 0.0
						if r32 != nil {
							sc = float64(r32[j])
						} else {
							sc = r64[j]
						}
						cs = append(cs, prune.Scored{Score: sc, Pos: q})
					}
				}
				prune.Smallest(cs, take)
				for _, c := range cs[:take] {
					res.pruned[c.Pos] = true
					res.removed++
					if !math.IsNaN(c.Score) {
						res.predicted += c.Score
					}
					removed = append(removed, c)
				}
			}
			if compact {
				rd.costsCompact(sums, l.W, e.eo.C, seaAll, seaRows, seaCols,
					func(i int) bool { return roundTake(quota[i], t, rounds) > 0 },
					func(i int, cost []float32) { pick(i, nil, cost) })
			} else {
				cost := sums.costs(&costBuf, l.W, e.eo.C)
				for i := 0; i < out; i++ {
					if roundTake(quota[i], t, rounds) > 0 {
						pick(i, cost[i*in:(i+1)*in], nil)
					}
				}
			}
			if len(removed) == 0 {
				continue
			}
			// The residual sums for the next round (or, after the last,
			// the bias): e loses w_ij a'_j for every removal.
			last := t == rounds-1
			if rd != nil {
				rd.update(removed, l.W, sums.shift, in, constCol, &costBuf) // the costs are spent
			}
			for _, c := range removed {
				l.W[c.Pos] = 0
			}
			sums.resetResidual()
			if rd != nil {
				// Covariances only where a weight can still go in a later
				// round: rows with quota left, their unpruned columns.
				var rows, cols []int
				if !last {
					live := make([]bool, in)
					for i := 0; i < out; i++ {
						if quota[i] == quota[i]*(t+1)/rounds {
							continue // all of the row's quota is taken
						}
						rows = append(rows, i)
						for j := 0; j < in; j++ {
							live[j] = live[j] || !res.pruned[i*in+j]
						}
					}
					for j, lv := range live {
						if lv && !constCol[j] {
							cols = append(cols, j)
						}
					}
				}
				if compact {
					rd.residualSums(sums)
					seaAll, seaRows, seaCols = false, rows, cols
					continue
				}
				rd.addResidualOn(sums, !last, rows, cols)
				continue
			}
			err := e.layerPass(cur, li, false, false, func(a, zc, z0, g []float64, rows, _ int) error {
				sums.addResidual(sums.center(a, rows), sub(grow(&sums.eBuf, len(zc)), zc, z0), g, rows, !last)
				return nil
			})
			if err != nil {
				return nil, err
			}
			res.passes++
		}
	}
	// From here on only the residual sums are needed (the bias): the
	// moments and covariances, three [Out, In] arrays, go before the
	// reconstruction allocates its own.
	sums.s1, sums.s2, sums.sea, sums.v32, sums.m32 = nil, nil, nil, nil, nil
	recon := ""
	if k > 0 && rd != nil {
		var changed bool
		rd.dropScratch()
		changed, recon = e.reconstruct(rd, l.W, l.B, res.pruned, sums.shift, out, in, e.rowsPer[li])
		if changed {
			sums.resetResidual()
			if compact {
				rd.residualSums(sums)
			} else {
				rd.addResidualOn(sums, false, nil, nil)
			}
		}
	} else if k > 0 && e.eo.Recon != ReconOff {
		recon = "no reconstruction (the layer's samples do not fit in memory)"
	}
	for i := range l.B {
		l.B[i] += sums.biasFix(i)
	}
	if k > 0 {
		e.prog.add(1) // the last round, with the reconstruction
	}
	res.predicted /= float64(max(rowsTotal, 1))
	if recon != "" {
		e.logf("ec+: layer %s: %s", l.Name, recon)
	}
	mode := "streamed"
	if res.resident {
		mode = "resident"
	}
	e.logf("ec+: layer %s: removed %d of %d (%s, %d data passes)", l.Name, res.removed, out*in, mode, res.passes)
	return res, nil
}

// firstPass accumulates a layer's sums on cur (and fills rd, if not nil).
// With the original input, e is exactly zero and, when Collect used the
// same g, its sums give the moments: S0' = S0 + lambda m N and so on. This
// spares the first layer, usually the widest, its forward product and two
// of its three weighted products.
func (e *ecp) firstPass(cur *onnxio.Network, li int, withSEA bool, rd *resident) (*ecpSums, error) {
	ls := e.st.Layers[li]
	out, in := ls.Layer.Out, ls.Layer.In
	clean := e.upstreamCleanSeq(cur, li)
	reuse := clean && e.collectMatches(li)
	compact := rd != nil && rd.f32 && !reuse
	var sums *ecpSums
	if compact {
		sums = newECPSumsSmall(out, in)
		sums.seaPending = withSEA && !clean
	} else {
		sums = newECPSums(out, in)
	}
	var sumA, sumA2 []float64
	if reuse {
		sums.shift = ls.Shift
		sumA, sumA2 = make([]float64, in), make([]float64, in)
	}
	err := e.layerPass(cur, li, clean, true, func(a, zc, z0, g []float64, rows, r0 int) error {
		ac := sums.center(a, rows)
		if reuse {
			for r := 0; r < rows; r++ {
				for j, v := range ac[r*in : (r+1)*in] {
					sumA[j] += v
					sumA2[j] += v * v
				}
			}
		}
		var r []float64
		if !clean {
			r = sub(grow(&sums.eBuf, len(zc)), zc, z0)
		}
		if rd != nil {
			// The products are done once on all rows, below.
			rd.put(ac, r, g, rows, r0, out, in)
			return nil
		}
		if !reuse {
			sums.addMoments(ac, g, rows)
		}
		if clean {
			sums.rows += rows
		} else {
			sums.addResidual(ac, r, g, rows, withSEA)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if compact {
		rd.momentsCompact(sums, !clean)
	} else if rd != nil {
		rd.moments(sums, !reuse, !clean, withSEA && !clean)
	}
	if reuse {
		rows := float64(e.n * e.rowsPer[li])
		for i := 0; i < out; i++ {
			lm := e.eo.Lambda * e.gMean[li][i]
			sums.s0[i] = ls.S0[i] + lm*rows
			for j := 0; j < in; j++ {
				sums.s1[i*in+j] = ls.S1[i*in+j] + lm*sumA[j]
				sums.s2[i*in+j] = ls.S2[i*in+j] + lm*sumA2[j]
			}
		}
	}
	return sums, nil
}

// layerPass runs the data through cur up to layer li and calls f per batch
// with a' [rows, In] and z' [rows, Out] of cur, and the original network's
// z0 and flattened g' = g + lambda mean(g), both [rows, Out]; r0 is the
// batch's first row. inputOnly stops before the layer (zc and z0 nil).
//
// Passes run cur from the kept traces of the previous layer's first pass
// (e.prev) when there are some: everything before that layer is final, so
// each layer's product is computed once, not once per layer after it.
// store keeps this pass's traces for the next layer.
//
// A kept trace is re-run in place (analysis.RunFromInPlace): a copy of it
// would cost every value of the network per layer and batch, quadratic in
// the depth. What the run replaced is put back after the batch unless the
// trace is kept again, so e.prev stays as it was for the passes that do
// not store. Each kept trace's size is carried along for the same reason.
func (e *ecp) layerPass(cur *onnxio.Network, li int, inputOnly, store bool, f func(a, zc, z0, g []float64, rows, r0 int) error) error {
	ls := e.st.Layers[li]
	out := ls.Layer.Out
	op := ls.Op
	in := cur.Ops[op].In[0]
	pre := prefixNet(cur, op)
	if inputOnly {
		pre = prefixTo(cur, op, in)
	}
	gs := e.freshStats()
	mean := e.gMean[li]
	lambda := e.eo.Lambda
	var kept []keptTrace
	var undos [][]*analysis.Tensor // per kept trace: the values its run replaced
	var gpBuf, z0Buf, gBuf []float64
	size := 0
	batch := 0
	// The refit replays the last layer's traces, and needs all their
	// values: when earlier ones were trimmed, that layer runs from the
	// data.
	last := li == len(e.st.Layers)-1
	full := store && last && e.trimmed
	err := e.data.Each(ecpBatch, func(b analysis.Batch) error {
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		var prev *keptTrace
		if batch < len(e.prev) && !full {
			prev = &e.prev[batch]
			if prev.start != b.Start || prev.n != n {
				return fmt.Errorf("samples %d..%d: the calibration data changed between passes", b.Start, b.Start+n-1)
			}
		}
		batch++
		rows := n * e.rowsPer[li]
		r0 := b.Start * e.rowsPer[li]
		var z0, g, a, zc []float64
		var tr0 *analysis.Trace
		if e.gCache != nil {
			if b.Start < 0 || (r0+rows)*out > e.gCache[li].len() {
				return fmt.Errorf("samples %d..%d: the calibration data changed between passes", b.Start, b.Start+n-1)
			}
			g = e.gCache[li].slice(r0*out, (r0+rows)*out, &gBuf)
			switch {
			case e.zCache != nil:
				z0 = e.zCache[li].slice(r0*out, (r0+rows)*out, &z0Buf)
			case !inputOnly:
				// g kept without z0 (see observeFirst): the original
				// network's forward pass up to the layer.
				tr0, err := analysis.Run(prefixNet(e.net, op), b.Inputs)
				if err != nil {
					return fmt.Errorf("samples %d..%d: original network: %w", b.Start, b.Start+n-1, err)
				}
				z0 = tr0.Values[e.net.Ops[op].Out].Data
			}
		} else {
			if tr0, err = analysis.Run(e.net, b.Inputs); err != nil {
				return fmt.Errorf("samples %d..%d: original network: %w", b.Start, b.Start+n-1, err)
			}
			gg, err := analysis.GBatch(e.net, tr0, gs, e.gopt, b.Start, n)
			if err != nil {
				return fmt.Errorf("samples %d..%d: g: %w", b.Start, b.Start+n-1, err)
			}
			z0, g = tr0.Values[e.net.Ops[op].Out].Data, gg[li]
		}
		var tr *analysis.Trace
		var undo []*analysis.Tensor // with inPlace: prev.tr's values before the run
		inPlace := false
		if inputOnly && tr0 != nil {
			tr, z0 = tr0, nil // the prefix is the original's
			a = tr.Values[in].Data
		} else {
			if prev != nil {
				inPlace = true
				undo = replacedValues(pre, prev.tr, e.prevOp)
				tr = prev.tr
				err = analysis.RunFromInPlace(pre, tr, e.prevOp)
			} else {
				tr, err = analysis.Run(pre, b.Inputs)
			}
			if err != nil {
				return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
			}
			a = tr.Values[in].Data
			if inputOnly {
				z0 = nil
			} else {
				zc = tr.Values[cur.Ops[op].Out].Data
			}
		}
		if len(a) != rows*ls.Layer.In || (zc != nil && len(zc) != rows*out) || len(g) != rows*out {
			return fmt.Errorf("samples %d..%d: layer input or output changed shape between passes", b.Start, b.Start+n-1)
		}
		keep := false
		if store {
			var ts int
			if inPlace {
				ts = prev.size + valuesSize(replacedValues(pre, tr, e.prevOp)) - valuesSize(undo)
			} else {
				ts = valuesSize(tr.Values)
			}
			size += ts
			// Traces only spare a forward pass per layer: they get the
			// fixed bound, not the one scaled to the model.
			if store = size <= ecpMemLimit; store {
				kept = append(kept, keptTrace{tr: tr, start: b.Start, n: n, size: ts})
				undos = append(undos, undo)
				keep = true
			} else {
				for i, k := range kept {
					restoreValues(pre, k.tr, e.prevOp, undos[i])
				}
				kept, undos = nil, nil
			}
		}
		if inPlace && !keep {
			defer restoreValues(pre, tr, e.prevOp, undo)
		}
		gp := grow(&gpBuf, len(g))
		for r := 0; r < rows; r++ {
			for i := 0; i < out; i++ {
				gp[r*out+i] = g[r*out+i] + lambda*mean[i]
			}
		}
		return f(a, zc, z0, gp, rows, r0)
	})
	if err != nil {
		return err
	}
	switch {
	case store && !last:
		trimTraces(cur, op, kept)
		e.trimmed = true
		e.prev, e.prevOp = kept, op
	case store:
		e.prev, e.prevOp = kept, op
	case full:
		e.prev = nil // the trimmed traces would not serve the refit
	}
	return nil
}

// trimTraces drops from the kept traces every value that a run from op
// on does not read: the values such a run writes again and those read
// only by earlier ops. On an MLP that leaves the layer's input, a third
// or less of each trace. The refit, which replays all of a trace, gets
// the last layer's, which are not trimmed (see layerPass). It runs once
// the pass is complete, as a pass that stops keeping halfway restores the
// previous traces, which must then still hold what runs from their own
// op need.
func trimTraces(net *onnxio.Network, op int, kept []keptTrace) {
	need := make([]bool, len(net.Values))
	mark := func(id int) {
		if id >= 0 && id < len(need) {
			need[id] = true
		}
	}
	for _, id := range net.Outputs {
		mark(id)
	}
	for i := op; i < len(net.Ops); i++ {
		for _, id := range net.Ops[i].In {
			mark(id)
		}
	}
	for i := op; i < len(net.Ops); i++ {
		if id := net.Ops[i].Out; id >= 0 && id < len(need) {
			need[id] = false
		}
	}
	for k := range kept {
		vs := kept[k].tr.Values
		for id := range vs {
			if id < len(need) && !need[id] {
				vs[id] = nil
			}
		}
		kept[k].size = valuesSize(vs)
	}
}

// upstreamClean tells whether the layers processed before li are all as
// in the original network, so that li's input is the original's and its
// residual is exactly zero.
func (e *ecp) upstreamClean(cur *onnxio.Network, li int) bool {
	for k := range e.st.Layers[:li] {
		if !e.layerClean(cur, k) {
			return false
		}
	}
	return true
}

// upstreamCleanSeq is upstreamClean along the sequential stage, where the
// layers before li are final: it compares each layer once per network
// (e.clean), not once per layer after it, which would be quadratic in
// the depth when the first layers keep every weight.
func (e *ecp) upstreamCleanSeq(cur *onnxio.Network, li int) bool {
	c := &e.clean
	if c.net != cur || li < c.upTo {
		*c = cleanPrefix{net: cur, ok: true}
	}
	for ; c.ok && c.upTo < li; c.upTo++ {
		c.ok = e.layerClean(cur, c.upTo)
	}
	return c.ok
}

// cleanPrefix is upstreamCleanSeq's memory: layers [0, upTo) of net were
// compared, and ok tells whether all were as in the original.
type cleanPrefix struct {
	net  *onnxio.Network
	upTo int
	ok   bool
}

// layerClean tells whether layer k of cur is as in the original network.
func (e *ecp) layerClean(cur *onnxio.Network, k int) bool {
	ls := e.st.Layers[k]
	l, o := cur.Ops[ls.Op].Layer, ls.Layer
	for q := range l.Params() {
		if math.Float64bits(l.At(q)) != math.Float64bits(o.At(q)) {
			return false
		}
	}
	for i, b := range l.B {
		ob := 0.0
		if o.B != nil {
			ob = o.B[i]
		}
		if b != ob {
			return false
		}
	}
	return true
}

// collectMatches tells whether Collect's sums of layer li were built from
// the same g as ec+'s, so that on the original input they give the
// moments without another product. Only for exact g: with probes Collect
// keeps its products in float32.
func (e *ecp) collectMatches(li int) bool {
	ls := e.st.Layers[li]
	l := ls.Layer
	if !e.gmode.Exact() {
		return false
	}
	if ls.Shift == nil || len(ls.Shift) != l.In || len(ls.S0) != l.Out || len(ls.S1) != l.Out*l.In || len(ls.S2) != l.Out*l.In || e.st.N != e.n {
		return false
	}
	for i, s := range e.s0[li] {
		if math.Abs(s-ls.S0[i]) > 1e-9*math.Abs(ls.S0[i]) {
			return false
		}
	}
	return true
}

// prefixNet is net evaluated only up to op (inclusive), whose output
// becomes the only graph output. It shares ops and layers with net.
func prefixNet(net *onnxio.Network, op int) *onnxio.Network {
	c := *net
	c.Ops = net.Ops[: op+1 : op+1]
	c.Outputs = []int{net.Ops[op].Out}
	return &c
}

// replacedValues lists the values of tr that running ops[start:] of net
// writes, in op order (nil for those not computed yet).
func replacedValues(net *onnxio.Network, tr *analysis.Trace, start int) []*analysis.Tensor {
	if start >= len(net.Ops) {
		return nil
	}
	vs := make([]*analysis.Tensor, 0, len(net.Ops)-start)
	for i := start; i < len(net.Ops); i++ {
		vs = append(vs, tr.Values[net.Ops[i].Out])
	}
	return vs
}

// restoreValues puts back what replacedValues listed.
func restoreValues(net *onnxio.Network, tr *analysis.Trace, start int, vs []*analysis.Tensor) {
	for k, v := range vs {
		tr.Values[net.Ops[start+k].Out] = v
	}
}

// valuesSize is the number of elements of the values (nil ones count 0).
func valuesSize(vs []*analysis.Tensor) int {
	size := 0
	for _, v := range vs {
		if v != nil {
			size += v.Len()
		}
	}
	return size
}

// prefixTo is net evaluated up to (not including) op, with value id as
// its only output.
func prefixTo(net *onnxio.Network, op, id int) *onnxio.Network {
	c := *net
	c.Ops = net.Ops[:op:op]
	c.Outputs = []int{id}
	return &c
}

func batchLen(b analysis.Batch) (int, error) {
	if len(b.Inputs) == 0 || b.Inputs[0] == nil || b.Inputs[0].Rank() == 0 {
		return 0, fmt.Errorf("samples from %d: a batch without inputs", b.Start)
	}
	return b.Inputs[0].Shape[0], nil
}

// sub sets d = x - y and returns it.
func sub(d, x, y []float64) []float64 {
	for q := range x {
		d[q] = x[q] - y[q]
	}
	return d
}

// grow returns (*buf)[:n], reallocating when too short: per-batch scratch
// reused across batches.
func grow(buf *[]float64, n int) []float64 {
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	return (*buf)[:n]
}
