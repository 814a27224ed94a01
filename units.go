package ecprune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// unitRun is what a method gets to remove hidden units.
type unitRun struct {
	groups        []*analysis.UnitGroup // the removable groups
	stats         analysis.StatsOptions
	opt           prune.UnitOptions
	noReconstruct bool
}

// unitCriterion scores units with a unit criterion and selects by it.
func (s *session) unitCriterion(m *Method, u *unitRun) (*prune.UnitPlan, *analysis.UnitStats, error) {
	u.opt.Compensate = analysis.UnitCompensates(m.Name)
	st, err := analysis.CollectUnits(s.net, u.groups, s.data(), u.stats)
	if err != nil {
		return nil, nil, err
	}
	sc, err := analysis.ScoreUnits(st, m.Name, u.opt.Compensate, s.opt.Seed)
	if err != nil {
		return nil, nil, err
	}
	plan, err := prune.SelectUnits(s.net, sc, u.opt)
	return plan, st, err
}

// pruneUnits is Prune with Neuron granularity: hidden units of dense
// chains go, and the model becomes a smaller dense one.
func pruneUnits(ctx context.Context, m *Model, d Data, o Options, meth *Method) (*Result, error) {
	scope := o.Scope
	if scope == "" {
		scope = prune.Global
	}
	s, err := openSession(ctx, m, d, o.Analysis, sessionNeeds{noStats: true})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	net := s.net
	r := &UnitReport{Model: m.path, Granularity: string(Neuron), Method: meth.Name, Sparsity: o.Sparsity,
		Scope: string(scope), Objective: string(s.opt.Objective), Seed: s.opt.Seed}
	probe, err := firstSamples(s.src, 2)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	groups, fixed, err := analysis.RemovableGroups(net, probe)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	r.Fixed = fixed
	if o.CostWeighted {
		if err := analysis.SetUnitCosts(net, groups, probe); err != nil {
			return nil, fmt.Errorf("%s: %w", m.path, err)
		}
	}
	if len(groups) == 0 {
		return nil, &onnxio.BadInputError{File: m.path, Msg: "no layer has removable units (" + strings.Join(r.Fixed, "; ") + ")"}
	}
	t := time.Now()
	p := startPhase(s.ev, "analysis", s.src.N())
	u := &unitRun{
		groups: groups,
		stats: analysis.StatsOptions{
			Objective: s.opt.Objective, Task: s.task, Labels: s.labels,
			Probes: s.opt.Probes, Seed: s.opt.Seed, Batch: s.opt.Batch, Log: logf(s.ev), Progress: p.set,
		},
		opt:           prune.UnitOptions{Sparsity: o.Sparsity, Scope: scope, Skip: o.Skip},
		noReconstruct: o.NoReconstruct,
	}
	plan, st, err := meth.units(s, u)
	p.end()
	if err != nil {
		if err = s.opt.fromPrune(err); errors.As(err, new(*OptionError)) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: analysis: %w", m.path, err)
	}
	r.Seconds.Analysis = time.Since(t).Seconds()
	r.Derivatives, r.Samples, r.Removed, r.Removable = st.Mode, st.N, plan.Removed, plan.Total
	if s.hold != nil {
		r.Holdout = s.hold.N()
	}
	t = time.Now()
	cuts := make([]export.UnitCut, 0, len(plan.Cuts))
	for _, c := range plan.Cuts {
		g := c.Group
		if c.ConsumerB != nil && g.Consumer.B == nil && o.NoNewBias {
			return nil, s.opt.optErr("NoNewBias", "layer %s has no bias and %s: cannot compensate the removed units", g.Consumer.Name, s.opt.name("NoNewBias"))
		}
		cut := export.UnitCutFor(net, g, c.Keep, c.ConsumerB, c.ConsumerW)
		cuts = append(cuts, cut)
		gr := UnitGroupReport{Layer: g.Name(), Consumer: g.Consumer.Name, Units: g.Units, Kept: len(c.Keep), Predicted: c.Predicted}
		if cut.Heads != nil {
			gr.Heads, gr.KeptHeads = cut.Heads.Heads, len(cut.Heads.KeepHeads)
		}
		r.Groups = append(r.Groups, gr)
	}
	meta, _ := json.Marshal(map[string]any{
		"version": Version, "granularity": string(Neuron), "method": meth.Name, "sparsity": o.Sparsity, "scope": string(scope),
		"objective": string(s.opt.Objective), "calibration_samples": st.N, "seed": s.opt.Seed,
	})
	pm, err := export.ApplyUnits(s.file, cuts, export.Options{AddBias: !o.NoNewBias, Metadata: string(meta)})
	if err != nil {
		return nil, err
	}
	r.Seconds.Write = time.Since(t).Seconds()
	ok = true
	return &Result{Units: r, s: s, opt: o, method: meth, pruned: pm, beforeParams: floatParams(s.file)}, nil
}

// saveUnits is SaveStaged of a Neuron run.
func (r *Result) saveUnits(path string, st *onnxio.Stage) error {
	s, rep := r.s, r.Units
	rep.Output = path
	t := time.Now()
	if err := export.SaveStaged(r.pruned, path, r.opt.ExternalData, st); err != nil {
		return err
	}
	rep.Seconds.Write += time.Since(t).Seconds()
	before, afterSize := measureAsync(s.path, nil), measureAsync(path, st)
	var am *onnxio.Model
	var err error
	if st != nil {
		am, err = onnxio.LoadStaged(path, st)
	} else {
		am, err = onnxio.Load(path)
	}
	if err != nil {
		return fmt.Errorf("reading back %s: %w", path, err)
	}
	anet, err := onnxio.Extract(am, onnxio.ExtractOptions{})
	if err != nil {
		return fmt.Errorf("reading back %s: %w", path, err)
	}
	if err := anet.Err(path); err != nil {
		return err
	}
	t = time.Now()
	if rep.Calibration.Original, rep.Calibration.Pruned, err = s.compare(anet, s.src, s.labels); err != nil {
		return err
	}
	if s.hold != nil {
		var hq QualityPair
		if hq.Original, hq.Pruned, err = s.compare(anet, s.hold, s.hlabels); err != nil {
			return err
		}
		rep.HoldoutQ = &hq
	}
	rep.Seconds.Evaluate = time.Since(t).Seconds()
	for _, x := range []struct {
		dst    *UnitSize
		pend   *pendingSize
		net    *onnxio.Network
		params int64
	}{{&rep.Before, before, s.net, r.beforeParams}, {&rep.After, afterSize, anet, floatParams(am)}} {
		<-x.pend.done
		if x.pend.err != nil {
			return x.pend.err
		}
		x.dst.Bytes, x.dst.GzipBytes = x.pend.s.Disk, x.pend.s.Gzip
		x.dst.Params = x.params
		if x.dst.MACs, err = denseMACs(x.net, s.src); err != nil {
			return err
		}
	}
	return nil
}

// floatParams counts the elements of a model's float initializers.
func floatParams(m *onnxio.Model) int64 {
	var n int64
	for _, t := range m.Proto.GetGraph().GetInitializer() {
		switch t.GetDataType() {
		case onnxio.Float, onnxio.Double, onnxio.Float16, onnxio.BFloat16:
			n += onnxio.NumElements(t.GetDims())
		}
	}
	return n
}

// firstSamples is the first n calibration samples, to probe the shapes
// attention heads flow through.
func firstSamples(src *calib.Source, n int) ([]*analysis.Tensor, error) {
	var probe []*analysis.Tensor
	err := calib.Data{Src: src}.Each(n, func(b analysis.Batch) error {
		for _, t := range b.Inputs {
			probe = append(probe, t.Clone())
		}
		return errOneSample
	})
	if err != nil && !errors.Is(err, errOneSample) {
		return nil, err
	}
	return probe, nil
}

// errOneSample stops the data stream after its first sample.
var errOneSample = errors.New("one sample")

// denseMACs is the dense layers' multiply-adds for one sample: Out x In
// per row of the layer's input ([N, T, C] inputs have T rows a sample),
// measured on the first calibration sample.
func denseMACs(net *onnxio.Network, src *calib.Source) (int64, error) {
	var macs int64
	err := calib.Data{Src: src}.Each(1, func(b analysis.Batch) error {
		tr, err := analysis.Run(net, b.Inputs)
		if err != nil {
			return err
		}
		for _, op := range net.Ops {
			if op.Kind == onnxio.OpDense {
				rows := tr.Values[op.In[0]].Len() / op.Layer.In
				macs += int64(rows) * int64(op.Layer.Out) * int64(op.Layer.In)
			}
		}
		return errOneSample
	})
	if err != nil && !errors.Is(err, errOneSample) {
		return 0, err
	}
	return macs, nil
}

// UnitInfo says whether a layer's output units can be removed (Neuron
// granularity), and into which layer they feed, or why not; for an
// attention block (Heads > 0), whether its heads can.
type UnitInfo struct {
	Layer       string   `json:"layer"`
	Units       int      `json:"units"`
	Removable   bool     `json:"removable"`
	Consumer    string   `json:"consumer,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Heads       int      `json:"heads,omitempty"`
	HeadDim     int      `json:"head_dim,omitempty"`
	Projections []string `json:"projections,omitempty"`
}

// Units lists the model's groups of hidden units.
func Units(m *Model) []UnitInfo {
	var out []UnitInfo
	for _, g := range analysis.UnitGroups(m.net) {
		u := UnitInfo{Layer: g.Name(), Units: g.Units, Removable: g.Removable(), Reason: g.Reason}
		if g.Consumer != nil {
			u.Consumer = g.Consumer.Name
		}
		out = append(out, u)
	}
	heads, err := analysis.HeadGroups(m.net, analysis.ProbeInputs(m.net))
	if err != nil {
		return out // shapes could not be probed: no heads listed
	}
	for _, g := range heads {
		u := UnitInfo{Layer: g.Name(), Units: g.Units, Removable: g.Removable(), Reason: g.Reason}
		if g.Heads != nil {
			u.Consumer, u.Heads, u.HeadDim = g.Consumer.Name, g.Heads.Heads, g.Block()
			for _, l := range g.Heads.Producers {
				u.Projections = append(u.Projections, l.Name)
			}
		}
		out = append(out, u)
	}
	return out
}

// Treatments says how the analysis treats each dense layer of m:
// "output-level", "local objective: <reason>" or "not prunable: <reason>".
func Treatments(m *Model) map[*onnxio.Layer]string {
	local := analysis.LocalObjectives(m.net)
	out := map[*onnxio.Layer]string{}
	for _, l := range m.net.Layers {
		out[l] = analysis.Treatment(l, local)
	}
	return out
}
