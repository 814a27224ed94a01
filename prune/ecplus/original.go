package ecplus

import (
	"fmt"
	"slices"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

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
		if err := e.observe(b.Start, n, tr, g); err != nil {
			return err
		}
		e.prog.add(n)
		return nil
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
	// With probes (the mode of large models) z0 is not kept at all but
	// recomputed by each pass, a forward product per layer: the caches
	// are filled during the statistics pass, next to its [Out, In] sums,
	// and g alone is a third of g and z0.
	f32 := e.gopt.Probes > 0
	zBytes := 8
	if f32 {
		zBytes = 0
	}
	if total*(zBytes+valueBytes(f32)) <= e.limit {
		e.gCache = make([]*vstore, len(layers))
		if !f32 {
			e.zCache = make([]*vstore, len(layers))
		}
		for li, ls := range layers {
			size := e.data.Len() * e.rowsPer[li] * ls.Layer.Out
			e.gCache[li] = newVStore(size, f32)
			if e.zCache != nil {
				e.zCache[li] = newVStore(size, false)
			}
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
		}
		if e.zCache != nil {
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

// Prep keeps, while the statistics are computed, what ec+ needs of
// the original network (g and z of every layer, the refit's targets), so
// that ec+ skips a pass of its own: about one analysis' worth of time,
// once for all the sparsities of a sweep. Pass Observe as
// StatsOptions.Observe and the prep as Options.Prep. It is used
// when g is the output objective's (exact or probes) and everything
// fitted in memory; otherwise ec+ runs its own pass as before.
type Prep struct {
	net  *onnxio.Network
	data analysis.Data
	task analysis.Task
	e    *ecp
	ok   bool
}

// NewPrep prepares for the statistics pass over data.
func NewPrep(net *onnxio.Network, data analysis.Data, task analysis.Task) *Prep {
	return &Prep{net: net, data: data, task: task, ok: true}
}

// Observe is a StatsOptions.Observe.
func (p *Prep) Observe(st *analysis.Stats, b analysis.Batch, tr *analysis.Trace, g [][]float64) error {
	if !p.ok {
		return nil
	}
	if p.e == nil {
		if !st.Mode.Exact() && st.Mode.Kind != analysis.DerivProbes {
			p.ok = false // the loss objective: ec+ needs the output's g
			return nil
		}
		e, err := newECP(p.net, p.data, st, Options{}, p.task, func(string, ...any) {})
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
func (p *Prep) take(e *ecp) bool {
	if p == nil || !p.ok || p.e == nil || p.e.st != e.st || p.e.gmode != e.gmode || p.e.n != e.data.Len() || p.e.rv.task != e.rv.task {
		return false
	}
	if p.e.gMean == nil && p.e.observeEnd() != nil {
		return false
	}
	e.s0, e.rowsPer, e.gMean, e.n, e.rv = p.e.s0, p.e.rowsPer, p.e.gMean, p.e.n, p.e.rv
	// Copies of the lists, not of the caches: e drops its layers' caches
	// as it goes (dropLayer), and the Prep may serve another run.
	e.gCache, e.zCache = slices.Clone(p.e.gCache), slices.Clone(p.e.zCache)
	return true
}
