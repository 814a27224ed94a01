package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// unitSize is a model's size for structured pruning: what shrinks.
type unitSize struct {
	Bytes     int64 `json:"bytes"`
	GzipBytes int64 `json:"gzip_bytes"`
	Params    int64 `json:"params"`     // elements of every float initializer
	MACs      int64 `json:"dense_macs"` // multiply-adds of the dense layers per sample
}

type unitGroupReport struct {
	Layer     string  `json:"layer"`
	Consumer  string  `json:"consumer"`
	Units     int     `json:"units"`
	Kept      int     `json:"kept"`
	Predicted float64 `json:"predicted_error"`
	Heads     int     `json:"heads,omitempty"` // attention heads: units go Units/Heads at a time
	KeptHeads int     `json:"kept_heads,omitempty"`
}

type unitPruneReport struct {
	Model       string            `json:"model"`
	Output      string            `json:"output"`
	Granularity string            `json:"granularity"`
	Method      string            `json:"method"`
	Sparsity    float64           `json:"sparsity"`
	Scope       string            `json:"scope"`
	Objective   string            `json:"objective"`
	Derivatives string            `json:"derivatives"`
	Seed        uint64            `json:"seed"`
	Samples     int               `json:"calibration_samples"`
	Holdout     int               `json:"holdout_samples"`
	Removed     int               `json:"removed_units"`
	Removable   int               `json:"removable_units"`
	Before      unitSize          `json:"before"`
	After       unitSize          `json:"after"`
	Groups      []unitGroupReport `json:"groups"`
	Fixed       []string          `json:"not_removable,omitempty"`
	Calibration qualityPair       `json:"calibration"`
	HoldoutQ    *qualityPair      `json:"holdout,omitempty"`
	Seconds     struct {
		Analysis float64 `json:"analysis"`
		Write    float64 `json:"write"`
		Evaluate float64 `json:"evaluate"`
	} `json:"seconds"`
}

// unitMethod checks --method for units: ec+ (sequential unit EC), or a
// unit criterion.
func unitMethod(m string) (string, error) {
	if m != "ec+" && !slices.Contains(analysis.UnitMethods(), m) {
		return "", usagef("--method %s is not available with --granularity neuron (want ec+, %s)", m, strings.Join(analysis.UnitMethods(), ", "))
	}
	return m, nil
}

// runPruneUnits is prune --granularity neuron.
func runPruneUnits(e *env, f *pruneFlags, in string) error {
	method, err := unitMethod(f.method)
	if err != nil {
		return err
	}
	for _, name := range []string{"nm", "layer-sparsity", "scores", "format"} {
		if e.fs.Changed(name) && !(name == "format" && (f.format == "dense" || f.format == "auto")) {
			return usagef("--%s does not apply to --granularity neuron (the output is a smaller dense model)", name)
		}
	}
	if f.af.ad == analysis.ADForward {
		return usagef("--granularity neuron takes derivatives in reverse mode only")
	}
	opt := prune.UnitOptions{Sparsity: f.sparsity, Scope: prune.Scope(f.scope), Skip: f.skip,
		Compensate: method == "ec+" || analysis.UnitCompensates(method), Reconstruct: method == "ec+" && f.reconstruct}
	f.af.noStats = true
	j, err := e.newJob(in, &f.af, false, false)
	if err != nil {
		return err
	}
	defer j.src.Close()
	net := j.ld.net
	r := &unitPruneReport{Model: in, Output: f.output, Granularity: "neuron", Method: method, Sparsity: f.sparsity,
		Scope: f.scope, Objective: f.af.objective, Seed: f.af.seed}
	probe, err := firstSamples(j, 2)
	if err != nil {
		return err
	}
	groups, fixed, err := analysis.RemovableGroups(net, probe)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	r.Fixed = fixed
	if len(groups) == 0 {
		return &onnxio.BadInputError{File: in, Msg: "no layer has removable units (" + strings.Join(r.Fixed, "; ") + ")"}
	}
	t := time.Now()
	p := e.newProgress("analysis", j.src.N())
	sopt := analysis.StatsOptions{
		Objective: analysis.Objective(f.af.objective), Task: j.task, Labels: j.labels,
		Probes: f.af.probes, Seed: f.af.seed, Batch: f.af.batch, Log: e.logf, Progress: p.set,
	}
	var st *analysis.UnitStats
	var plan *prune.UnitPlan
	if method == "ec+" {
		plan, st, err = prune.SequentialUnits(net, groups, sourceData{Src: j.src}, sopt, opt, f.af.ecplus.Rounds)
	} else {
		st, err = analysis.CollectUnits(net, groups, sourceData{Src: j.src}, sopt)
		if err == nil {
			var sc *analysis.UnitScores
			if sc, err = analysis.ScoreUnits(st, method, opt.Compensate, f.af.seed); err == nil {
				plan, err = prune.SelectUnits(net, sc, opt)
			}
		}
	}
	p.finish()
	if err != nil {
		return fmt.Errorf("%s: analysis: %w", in, err)
	}
	r.Seconds.Analysis = time.Since(t).Seconds()
	r.Derivatives, r.Samples, r.Removed, r.Removable = st.Mode, st.N, plan.Removed, plan.Total
	if j.hold != nil {
		r.Holdout = j.hold.N()
	}
	t = time.Now()
	cuts := make([]export.UnitCut, 0, len(plan.Cuts))
	for _, c := range plan.Cuts {
		g := c.Group
		if c.ConsumerB != nil && g.Consumer.B == nil && !f.addBias {
			return usagef("layer %s has no bias and --add-bias=false: cannot compensate the removed units", g.Consumer.Name)
		}
		cut := export.UnitCutFor(net, g, c.Keep, c.ConsumerB, c.ConsumerW)
		cuts = append(cuts, cut)
		gr := unitGroupReport{Layer: g.Name(), Consumer: g.Consumer.Name, Units: g.Units, Kept: len(c.Keep), Predicted: c.Predicted}
		if cut.Heads != nil {
			gr.Heads, gr.KeptHeads = cut.Heads.Heads, len(cut.Heads.KeepHeads)
		}
		r.Groups = append(r.Groups, gr)
	}
	meta, _ := json.Marshal(map[string]any{
		"version": version, "granularity": "neuron", "method": method, "sparsity": f.sparsity, "scope": f.scope,
		"objective": f.af.objective, "calibration_samples": st.N, "seed": f.af.seed,
	})
	pm, err := export.ApplyUnits(j.ld.model, cuts, export.Options{AddBias: f.addBias, Metadata: string(meta)})
	if err != nil {
		return err
	}
	if err := export.SaveStaged(pm, f.output, f.external, e.stage); err != nil {
		return err
	}
	r.Seconds.Write = time.Since(t).Seconds()
	before, afterSize := measureAsync(in, nil), measureAsync(f.output, e.stage)
	am, err := onnxio.LoadStaged(f.output, e.stage)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", f.output, err)
	}
	anet, err := onnxio.Extract(am, onnxio.ExtractOptions{})
	if err != nil {
		return fmt.Errorf("reading back %s: %w", f.output, err)
	}
	after := &loaded{path: f.output, model: am, net: anet}
	if err := after.net.Err(f.output); err != nil {
		return err
	}
	t = time.Now()
	if r.Calibration.Original, r.Calibration.Pruned, err = j.compare(after.net, j.src, j.labels); err != nil {
		return err
	}
	if j.hold != nil {
		var hq qualityPair
		if hq.Original, hq.Pruned, err = j.compare(after.net, j.hold, j.hlabels); err != nil {
			return err
		}
		r.HoldoutQ = &hq
	}
	r.Seconds.Evaluate = time.Since(t).Seconds()
	for _, s := range []struct {
		dst  *unitSize
		pend *pendingSize
		ld   *loaded
	}{{&r.Before, before, j.ld}, {&r.After, afterSize, after}} {
		<-s.pend.done
		if s.pend.err != nil {
			return s.pend.err
		}
		s.dst.Bytes, s.dst.GzipBytes = s.pend.s.Disk, s.pend.s.Gzip
		s.dst.Params = floatParams(s.ld.model)
		if s.dst.MACs, err = denseMACs(s.ld.net, j); err != nil {
			return err
		}
	}
	if f.report != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := e.stage.WriteFile(f.report, append(b, '\n')); err != nil {
			return err
		}
	}
	return e.output(r, func(w io.Writer) { printUnitReport(w, r) })
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
func firstSamples(j *job, n int) ([]*analysis.Tensor, error) {
	var probe []*analysis.Tensor
	err := sourceData{Src: j.src}.Each(n, func(b analysis.Batch) error {
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
func denseMACs(net *onnxio.Network, j *job) (int64, error) {
	var macs int64
	err := sourceData{Src: j.src}.Each(1, func(b analysis.Batch) error {
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

func printUnitReport(w io.Writer, r *unitPruneReport) {
	fmt.Fprintf(w, "%s -> %s: neurons, method %s, %.1f%% %s, objective %s, %d calibration samples (derivatives: %s)\n",
		r.Model, r.Output, r.Method, 100*r.Sparsity, r.Scope, r.Objective, r.Samples, r.Derivatives)
	fmt.Fprintf(w, "removed %d of %d removable units\n\n", r.Removed, r.Removable)
	printBeforeAfter(w, []beforeAfter{
		{"size on disk", r.Before.Bytes, r.After.Bytes, true},
		{"gzip size", r.Before.GzipBytes, r.After.GzipBytes, true},
		{"parameters", r.Before.Params, r.After.Params, false},
		{"dense multiply-adds per sample", r.Before.MACs, r.After.MACs, false},
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "units of\tinto\tkept\tpredicted error")
	for _, g := range r.Groups {
		kept := fmt.Sprintf("%d of %d", g.Kept, g.Units)
		if g.Heads > 0 {
			kept += fmt.Sprintf(" (%d of %d heads)", g.KeptHeads, g.Heads)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.4g\n", g.Layer, g.Consumer, kept, g.Predicted)
	}
	tw.Flush()
	for _, s := range r.Fixed {
		fmt.Fprintf(w, "not removable: %s\n", s)
	}
	fmt.Fprintln(w)
	printQuality(w, "calibration", r.Calibration)
	if r.HoldoutQ != nil {
		printQuality(w, "holdout", *r.HoldoutQ)
	}
}

// unitInfo says whether a layer's output units can be removed by
// --granularity neuron, and into which layer they feed, or why not; for
// an attention block (Heads > 0), whether its heads can.
type unitInfo struct {
	Layer       string   `json:"layer"`
	Units       int      `json:"units"`
	Removable   bool     `json:"removable"`
	Consumer    string   `json:"consumer,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Heads       int      `json:"heads,omitempty"`
	HeadDim     int      `json:"head_dim,omitempty"`
	Projections []string `json:"projections,omitempty"`
}

func inspectUnits(net *onnxio.Network) []unitInfo {
	var out []unitInfo
	for _, g := range analysis.UnitGroups(net) {
		u := unitInfo{Layer: g.Name(), Units: g.Units, Removable: g.Removable(), Reason: g.Reason}
		if g.Consumer != nil {
			u.Consumer = g.Consumer.Name
		}
		out = append(out, u)
	}
	heads, err := analysis.HeadGroups(net, analysis.ProbeInputs(net))
	if err != nil {
		return out // shapes could not be probed: no heads listed
	}
	for _, g := range heads {
		u := unitInfo{Layer: g.Name(), Units: g.Units, Removable: g.Removable(), Reason: g.Reason}
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

func printUnits(w io.Writer, units []unitInfo) {
	if len(units) == 0 {
		return
	}
	fmt.Fprintln(w, "\noutput units (prune --granularity neuron):")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	var attn []unitInfo
	for _, u := range units {
		switch {
		case u.Heads > 0 || u.Removable == false && strings.HasPrefix(u.Reason, "heads: "):
			attn = append(attn, u)
		case u.Removable:
			fmt.Fprintf(tw, "%s\t%d units\tremovable (into %s)\n", u.Layer, u.Units, u.Consumer)
		default:
			fmt.Fprintf(tw, "%s\t%d units\tnot removable: %s\n", u.Layer, u.Units, u.Reason)
		}
	}
	tw.Flush()
	if len(attn) == 0 {
		return
	}
	fmt.Fprintln(w, "\nattention heads (removed head_dim units at a time):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, u := range attn {
		if u.Removable {
			fmt.Fprintf(tw, "%s\t%d heads of %d\tremovable (rows of %s, columns of %s)\n", u.Layer, u.Heads, u.HeadDim, strings.Join(u.Projections, ", "), u.Consumer)
		} else {
			fmt.Fprintf(tw, "%s\t\tnot removable: %s\n", u.Layer, strings.TrimPrefix(u.Reason, "heads: "))
		}
	}
	tw.Flush()
}
