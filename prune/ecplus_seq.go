package prune

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
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
	eo   ECPlusOptions
	task analysis.Task
	logf func(string, ...any)

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
	clean  cleanPrefix // upstreamCleanSeq's memory

	rd *resident // buffers reused from layer to layer
}

func newECP(net *onnxio.Network, data analysis.Data, st *analysis.Stats, eo ECPlusOptions, task analysis.Task, logf func(string, ...any)) (*ecp, error) {
	e := &ecp{net: net, data: data, st: st, eo: eo, task: task, logf: logf, gmode: st.Mode}
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

// freshStats is a copy of the statistics for GBatch with its own random
// state, so that every pass draws the same probes.
func (e *ecp) freshStats() *analysis.Stats {
	return &analysis.Stats{Net: e.net, Layers: e.st.Layers, N: e.st.N, Mode: e.gmode, Objective: analysis.ObjOutput}
}

// origPass computes g of the original network once: its per-neuron sums
// (for lambda's mean) and, when they fit, g and z0 of every layer. It also
// settles the refit's targets.
func (e *ecp) origPass() error {
	gs := e.freshStats()
	err := e.data.Each(ecpBatch, func(b analysis.Batch) error {
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		tr, err := analysis.Run(e.net, b.Inputs)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		if e.rowsPer == nil && e.gmode.Kind == "" {
			e.observeFirst(tr, n)
			e.gmode = e.chooseMode(tr, n)
			gs.Mode = e.gmode
		}
		g, err := analysis.GBatch(e.net, tr, gs, e.gopt, b.Start, n)
		if err != nil {
			return fmt.Errorf("samples %d..%d: g: %w", b.Start, b.Start+n-1, err)
		}
		return e.observe(b.Start, n, tr, g)
	})
	if err != nil {
		return err
	}
	return e.observeEnd()
}

// observeFirst sizes the per-layer state from the first batch's trace.
func (e *ecp) observeFirst(tr *analysis.Trace, n int) {
	layers := e.st.Layers
	e.s0 = make([][]float64, len(layers))
	e.rowsPer = make([]int, len(layers))
	total := 0
	for li, ls := range layers {
		e.s0[li] = make([]float64, ls.Layer.Out)
		z := tr.Values[e.net.Ops[ls.Op].Out]
		e.rowsPer[li] = z.Len() / ls.Layer.Out / n
		total += e.data.Len() * e.rowsPer[li] * ls.Layer.Out
	}
	// z0 stays float64: the residuals z' - z0 are small differences.
	f32 := e.gopt.Probes > 0
	if total*(8+valueBytes(f32)) <= e.limit {
		e.gCache = make([]*vstore, len(layers))
		e.zCache = make([]*vstore, len(layers))
		for li, ls := range layers {
			size := e.data.Len() * e.rowsPer[li] * ls.Layer.Out
			e.gCache[li] = newVStore(size, f32)
			e.zCache[li] = newVStore(size, false)
		}
	} else {
		e.logf("ec+: g and z of the original network (%d values) are recomputed on every pass", 2*total)
	}
	e.rv.settle(e.net, tr, n, e.data.Len())
}

// observe adds one batch of the original network: its trace and g.
func (e *ecp) observe(start, n int, tr *analysis.Trace, g [][]float64) error {
	if e.rowsPer == nil {
		e.observeFirst(tr, n)
	}
	for li, ls := range e.st.Layers {
		out := ls.Layer.Out
		z := tr.Values[e.net.Ops[ls.Op].Out].Data
		if len(z) != n*e.rowsPer[li]*out || len(g[li]) != len(z) {
			return fmt.Errorf("samples %d..%d: layer %q has %d outputs, want %d per sample", start, start+n-1, ls.Layer.Name, len(z)/n, e.rowsPer[li]*out)
		}
		for r := 0; r < len(z)/out; r++ {
			for i, v := range g[li][r*out : (r+1)*out] {
				e.s0[li][i] += v
			}
		}
		if e.gCache != nil {
			e.gCache[li].append(g[li])
			e.zCache[li].append(z)
		}
	}
	if err := e.rv.keepTargets(tr, n); err != nil {
		return fmt.Errorf("samples %d..%d: %w", start, start+n-1, err)
	}
	e.n += n
	return nil
}

// observeEnd turns the sums into lambda's per-neuron means.
func (e *ecp) observeEnd() error {
	if e.n == 0 {
		return fmt.Errorf("no calibration samples")
	}
	e.gMean = make([][]float64, len(e.st.Layers))
	for li := range e.st.Layers {
		e.gMean[li] = make([]float64, len(e.s0[li]))
		rows := float64(e.n * e.rowsPer[li])
		for i, s := range e.s0[li] {
			e.gMean[li][i] = s / rows
		}
	}
	return nil
}

// ECPlusPrep keeps, while the statistics are computed, what ec+ needs of
// the original network (g and z of every layer, the refit's targets), so
// that ec+ skips a pass of its own: about one analysis' worth of time,
// once for all the sparsities of a sweep. Pass Observe as
// StatsOptions.Observe and the prep as ECPlusOptions.Prep. It is used
// when g is the output objective's (exact or probes) and everything
// fitted in memory; otherwise ec+ runs its own pass as before.
type ECPlusPrep struct {
	net  *onnxio.Network
	data analysis.Data
	task analysis.Task
	e    *ecp
	ok   bool
}

// NewECPlusPrep prepares for the statistics pass over data.
func NewECPlusPrep(net *onnxio.Network, data analysis.Data, task analysis.Task) *ECPlusPrep {
	return &ECPlusPrep{net: net, data: data, task: task, ok: true}
}

// Observe is a StatsOptions.Observe.
func (p *ECPlusPrep) Observe(st *analysis.Stats, b analysis.Batch, tr *analysis.Trace, g [][]float64) error {
	if !p.ok {
		return nil
	}
	if p.e == nil {
		if !st.Mode.Exact() && st.Mode.Kind != analysis.DerivProbes {
			p.ok = false // the loss objective: ec+ needs the output's g
			return nil
		}
		e, err := newECP(p.net, p.data, st, ECPlusOptions{}, p.task, func(string, ...any) {})
		if err != nil {
			p.ok = false
			return nil
		}
		p.e = e
	}
	n, err := batchLen(b)
	if err != nil {
		return err
	}
	if err := p.e.observe(b.Start, n, tr, g); err != nil {
		return err
	}
	if p.e.gCache == nil || p.e.rv.y0 == nil {
		p.ok, p.e = false, nil // too large to keep: ec+ streams instead
	}
	return nil
}

// take hands the kept state to an ec+ run on the same statistics.
func (p *ECPlusPrep) take(e *ecp) bool {
	if p == nil || !p.ok || p.e == nil || p.e.st != e.st || p.e.gmode != e.gmode || p.e.n != e.data.Len() || p.e.rv.task != e.rv.task {
		return false
	}
	if p.e.gMean == nil && p.e.observeEnd() != nil {
		return false
	}
	e.s0, e.rowsPer, e.gCache, e.zCache, e.gMean, e.n, e.rv = p.e.s0, p.e.rowsPer, p.e.gCache, p.e.zCache, p.e.gMean, p.e.n, p.e.rv
	return true
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

func batchLen(b analysis.Batch) (int, error) {
	if len(b.Inputs) == 0 || b.Inputs[0] == nil || b.Inputs[0].Rank() == 0 {
		return 0, fmt.Errorf("samples from %d: a batch without inputs", b.Start)
	}
	return b.Inputs[0].Shape[0], nil
}

// prefixNet is net evaluated only up to op (inclusive), whose output
// becomes the only graph output. It shares ops and layers with net.
func prefixNet(net *onnxio.Network, op int) *onnxio.Network {
	c := *net
	c.Ops = net.Ops[: op+1 : op+1]
	c.Outputs = []int{net.Ops[op].Out}
	return &c
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
	err := e.data.Each(ecpBatch, func(b analysis.Batch) error {
		n, err := batchLen(b)
		if err != nil {
			return err
		}
		var prev *keptTrace
		if batch < len(e.prev) {
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
			if b.Start < 0 || (r0+rows)*out > e.zCache[li].len() {
				return fmt.Errorf("samples %d..%d: the calibration data changed between passes", b.Start, b.Start+n-1)
			}
			z0 = e.zCache[li].slice(r0*out, (r0+rows)*out, &z0Buf)
			g = e.gCache[li].slice(r0*out, (r0+rows)*out, &gBuf)
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
	if store {
		e.prev, e.prevOp = kept, op
	}
	return nil
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
	for q, w := range l.W {
		if math.Float64bits(w) != math.Float64bits(o.At(q)) {
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

	acBuf, ac2Buf, geBuf, eBuf []float64 // per-batch scratch
}

func newECPSums(out, in int) *ecpSums {
	return &ecpSums{out: out, in: in, s0: make([]float64, out), s1: make([]float64, out*in), s2: make([]float64, out*in),
		se: make([]float64, out), sea: make([]float64, out*in), e1: make([]float64, out)}
}

// resetResidual clears the residual sums before a new pass over e.
func (s *ecpSums) resetResidual() {
	clear(s.se)
	clear(s.sea)
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

// grow returns (*buf)[:n], reallocating when too short: per-batch scratch
// reused across batches.
func grow(buf *[]float64, n int) []float64 {
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	return (*buf)[:n]
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
	gemmTN(rows, s.out, s.in, g, ac, s.s1)
	gemmTN(rows, s.out, s.in, g, ac2, s.s2)
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
		gemmTN(rows, s.out, s.in, ge, ac, s.sea)
	}
	s.rows += rows
}

// gemmTN adds x^T y to c: x is [rows, m], y [rows, n], c [m, n].
func gemmTN(rows, m, n int, x, y, c []float64) {
	if rows == 0 || m == 0 || n == 0 {
		return
	}
	blas64.Gemm(blas.Trans, blas.NoTrans, 1,
		blas64.General{Rows: rows, Cols: m, Stride: m, Data: x[:rows*m]},
		blas64.General{Rows: rows, Cols: n, Stride: n, Data: y[:rows*n]},
		1, blas64.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]})
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

type scored struct {
	s float64
	q int
}

// cmpScored orders by score then index; NaN sorts last.
func cmpScored(a, b scored) int {
	an, bn := math.IsNaN(a.s), math.IsNaN(b.s)
	switch {
	case an && !bn:
		return 1
	case bn && !an:
		return -1
	case !an && a.s != b.s:
		return cmp.Compare(a.s, b.s)
	}
	return cmp.Compare(a.q, b.q)
}

// rowQuotas ranks all weights of a layer by score (then flat index) and
// counts, per row, how many of the k lowest fall in it.
func rowQuotas(score []float64, out, in, k int) []int {
	quota := make([]int, out)
	markSmallestParts([][]float64{score}, k, func(_, q int) { quota[q/in]++ })
	return quota
}

// smallest reorders cs so that cs[:k] are its k smallest elements by
// cmpScored, in no particular order: quickselect with a median-of-three
// pivot, sorting past a depth limit. cmpScored is a total order (indices
// differ), so which elements end up in cs[:k] is fully determined.
func smallest(cs []scored, k int) {
	if k <= 0 || k >= len(cs) {
		return
	}
	lo, hi := 0, len(cs)
	depth := 2 * bits.Len(uint(len(cs)))
	for hi-lo > 16 {
		if depth == 0 {
			break
		}
		depth--
		m := lo + (hi-lo)/2
		if cmpScored(cs[m], cs[lo]) < 0 {
			cs[m], cs[lo] = cs[lo], cs[m]
		}
		if cmpScored(cs[hi-1], cs[lo]) < 0 {
			cs[hi-1], cs[lo] = cs[lo], cs[hi-1]
		}
		if cmpScored(cs[hi-1], cs[m]) < 0 {
			cs[hi-1], cs[m] = cs[m], cs[hi-1]
		}
		cs[m], cs[hi-1] = cs[hi-1], cs[m] // the median is the pivot, at hi-1
		pivot := cs[hi-1]
		p := lo
		for i := lo; i < hi-1; i++ {
			if cmpScored(cs[i], pivot) < 0 {
				cs[i], cs[p] = cs[p], cs[i]
				p++
			}
		}
		cs[p], cs[hi-1] = cs[hi-1], cs[p]
		switch {
		case k == p || k == p+1:
			return
		case k < p:
			hi = p
		default:
			lo = p + 1
		}
	}
	slices.SortFunc(cs[lo:hi], cmpScored)
}

// roundTake is how many of a row's quota go in round t of T: the quota
// split as evenly as integers allow, summing to quota over the rounds.
func roundTake(quota, t, rounds int) int {
	return quota*(t+1)/rounds - quota*t/rounds
}

// ecpLayerResult is what pruning one layer produced.
type ecpLayerResult struct {
	pruned    []bool
	removed   int
	predicted float64
	resident  bool
	passes    int
}

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
	wr             []float64 // scratch of update
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
// on a layer of millions of weights took most of ec+.
func (rd *resident) update(removed []scored, w, shift []float64, in int, constCol []bool) {
	n := rd.rows
	if n == 0 {
		return
	}
	out := len(rd.e) / n
	rowShift := make([]float64, out)
	byRow := make([][]scored, out)
	for _, c := range removed {
		i, j := c.q/in, c.q%in
		rowShift[i] += w[c.q] * shift[j]
		if constCol == nil || !constCol[j] {
			byRow[i] = append(byRow[i], c)
		}
	}
	// One product over all rows (rows without removals add zeros) when
	// the round is dense enough for it to beat one axpy per weight: a
	// product costs out*in*n multiply-adds at full speed, the axpys
	// len(removed)*n at memory speed.
	if len(removed)*64 >= out*in {
		wr := grow(&rd.wr, out*in)
		clear(wr)
		for i, r := range byRow {
			for _, c := range r {
				wr[i*in+c.q%in] = w[c.q]
			}
		}
		rd.gemm(false, out, n, in, -1, wr, rd.ac, rd.ac32, 1, rd.e)
	} else {
		for i, r := range byRow {
			for _, c := range r {
				j := c.q % in
				blas64.Axpy(-w[c.q], blas64.Vector{N: n, Inc: 1, Data: rd.ac[j*n : (j+1)*n]}, blas64.Vector{N: n, Inc: 1, Data: rd.e[i*n : (i+1)*n]})
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

func addTo(dst, src []float64) {
	for q, v := range src {
		dst[q] += v
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
	if k > 0 {
		ec := make([]float64, out*in)
		for q, w := range l.W {
			ec[q] = w * w * sums.variance(q)
		}
		quota := rowQuotas(ec, out, in, k)
		rounds := e.eo.Rounds
		var constCol []bool
		if rd != nil {
			constCol = rd.constant(in)
			rd.seal()
		}
		var removed []scored
		cs := make([]scored, 0, in)
		var costBuf []float64
		for t := 0; t < rounds; t++ {
			removed = removed[:0]
			cost := sums.costs(&costBuf, l.W, e.eo.C)
			for i := 0; i < out; i++ {
				take := roundTake(quota[i], t, rounds)
				if take == 0 {
					continue
				}
				cs = cs[:0]
				for j := 0; j < in; j++ {
					if q := i*in + j; !res.pruned[q] {
						cs = append(cs, scored{cost[q], q})
					}
				}
				smallest(cs, take)
				for _, c := range cs[:take] {
					res.pruned[c.q] = true
					res.removed++
					if !math.IsNaN(c.s) {
						res.predicted += c.s
					}
					removed = append(removed, c)
				}
			}
			if len(removed) == 0 {
				continue
			}
			// The residual sums for the next round (or, after the last,
			// the bias): e loses w_ij a'_j for every removal.
			last := t == rounds-1
			if rd != nil {
				rd.update(removed, l.W, sums.shift, in, constCol)
			}
			for _, c := range removed {
				l.W[c.q] = 0
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
	recon := ""
	if k > 0 && rd != nil {
		var changed bool
		changed, recon = e.reconstruct(rd, l.W, l.B, res.pruned, sums.shift, out, in, e.rowsPer[li])
		if changed {
			sums.resetResidual()
			rd.addResidualOn(sums, false, nil, nil)
		}
	} else if k > 0 && e.eo.Recon != ReconOff {
		recon = "no reconstruction (the layer's samples do not fit in memory)"
	}
	for i := range l.B {
		l.B[i] += sums.biasFix(i)
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

// sub sets d = x - y and returns it.
func sub(d, x, y []float64) []float64 {
	for q := range x {
		d[q] = x[q] - y[q]
	}
	return d
}

// firstPass accumulates a layer's sums on cur (and fills rd, if not nil).
// With the original input, e is exactly zero and, when Collect used the
// same g, its sums give the moments: S0' = S0 + lambda m N and so on. This
// spares the first layer, usually the widest, its forward product and two
// of its three weighted products.
func (e *ecp) firstPass(cur *onnxio.Network, li int, withSEA bool, rd *resident) (*ecpSums, error) {
	ls := e.st.Layers[li]
	out, in := ls.Layer.Out, ls.Layer.In
	sums := newECPSums(out, in)
	clean := e.upstreamCleanSeq(cur, li)
	reuse := clean && e.collectMatches(li)
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
	if rd != nil {
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
