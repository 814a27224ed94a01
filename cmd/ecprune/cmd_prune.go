package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// densifyNote is said in every size report: sparse storage shrinks files,
// ONNX Runtime densifies it on load.
const densifyNote = "ONNX Runtime densifies sparse tensors when it loads them: the pruned file is smaller to store and ship, not faster or smaller in memory at run time"

type pruneFlags struct {
	af            analysisFlags
	output        string
	method        string
	sparsity      float64
	scope         string
	format        string
	nm            string
	skip          []string
	layerSparsity []string
	addBias       bool
	scores        string
	report        string
	external      int64
	granularity   string
	reconstruct   bool
}

func (f *pruneFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.output, "output", "o", "", "the pruned model to write (required; never the input)")
	fs.StringVar(&f.method, "method", "ec+", "pruning method: ec+ (recommended: sequential EC with a bias refit), ec (the paper's one-shot method), or a baseline: "+strings.Join(analysis.Methods(), ", "))
	fs.Float64Var(&f.sparsity, "sparsity", 0.5, "fraction of the prunable weights to remove, in [0, 1)")
	fs.StringVar(&f.scope, "scope", "global", "rank weights over all layers (global) or within each layer (layer)")
	fs.StringVar(&f.format, "format", "auto", "how pruned weights are stored: auto (smallest valid), constant (sparse Constant node), sparse-initializer, dense")
	fs.StringVar(&f.nm, "nm", "", "N:M pattern instead of --sparsity, e.g. 2:4 keeps 2 of every 4 consecutive weights of a row")
	fs.StringSliceVar(&f.skip, "skip", nil, "layers (weight initializer or node names) to leave dense")
	fs.StringSliceVar(&f.layerSparsity, "layer-sparsity", nil, "per-layer sparsity, NAME=S,...; these layers are ranked on their own")
	fs.BoolVar(&f.addBias, "add-bias", true, "give a bias-free layer a bias when compensation needs one")
	fs.StringVar(&f.scores, "scores", "", "write every layer's importance and bias shift to this .npz (NAME.importance, NAME.delta, [out, in])")
	fs.StringVar(&f.report, "report", "", "also write the report as JSON to this file")
	fs.Int64Var(&f.external, "external-data", 0, "store tensors of at least this many bytes in OUTPUT.data (0: keep the input's layout)")
	fs.BoolVar(&f.reconstruct, "reconstruct", true, "with --granularity neuron and ec+: predict removed units from the kept ones by least squares (changes the next layer's kept columns); false: replace them by their means")
	fs.StringVar(&f.granularity, "granularity", "weight", "what is removed: weight (unstructured) or neuron (hidden units of dense chains: a smaller dense model; --sparsity is then the fraction of removable units)")
	f.af.register(fs)
}

func init() {
	f := &pruneFlags{}
	register(&command{
		name:    "prune",
		summary: "prune a model's dense layers, compensating each removal with a bias shift",
		usage:   "MODEL -o OUT --calib X.npy [flags]",
		examples: []string{
			"ecprune prune model.onnx -o pruned.onnx --calib calib_x.npy --sparsity 0.8",
			"ecprune prune model.onnx -o pruned.onnx --calib x.npy --labels y.npy --method ec+ --sparsity 0.9 --report report.json",
			"ecprune prune model.onnx -o pruned.onnx --calib x.npy --nm 2:4 --format dense",
		},
		flags: f.register,
		run:   func(e *env, args []string) error { return runPrune(e, f, args) },
		files: f.files,
	})
}

// files lists what prune reads and writes; the external data files a
// kept layout writes beside -o follow from the model (env.derived).
func (f *pruneFlags) files(args []string) (in, out []fileRef) {
	in = append(refs("the model", args...), refs("--calib", f.af.calib...)...)
	in = append(in, refs("--labels", f.af.labels)...)
	out = refs("-o", f.output)
	if f.output != "" && f.external > 0 {
		out = append(out, refs("-o's external data file", filepath.Join(filepath.Dir(f.output), filepath.Base(f.output)+".data"))...)
	}
	out = append(out, refs("--report", f.report)...)
	out = append(out, refs("--scores", f.scores)...)
	return in, out
}

// checkFraction refuses a sparsity outside [0, 1) before any work, with a
// hint when it looks like a percentage.
func checkFraction(flag string, s float64) error {
	if s >= 0 && s < 1 {
		return nil
	}
	if s >= 1 && s < 100 {
		return usagef("%s %g is a fraction of the weights, in [0, 1): for %g%% write %g", flag, s, s, s/100)
	}
	return usagef("%s %g is outside [0, 1)", flag, s)
}

// pruneOptions turns flags into prune.Options.
func (f *pruneFlags) pruneOptions(fs *pflag.FlagSet) (prune.Options, error) {
	opt := prune.Options{Sparsity: f.sparsity, Scope: prune.Scope(f.scope), Skip: f.skip, Compensate: true}
	if f.nm != "" {
		var n, m int
		if _, err := fmt.Sscanf(f.nm, "%d:%d", &n, &m); err != nil || fmt.Sprintf("%d:%d", n, m) != f.nm {
			return opt, usagef("--nm %q: want N:M, e.g. 2:4", f.nm)
		}
		if fs.Changed("sparsity") {
			return opt, usagef("--nm and --sparsity exclude each other")
		}
		opt.NM = &prune.NM{N: n, M: m}
		opt.Sparsity = 1 - float64(n)/float64(m)
	}
	if len(f.layerSparsity) > 0 {
		opt.LayerSparsity = map[string]float64{}
		for _, kv := range f.layerSparsity {
			k, v, ok := strings.Cut(kv, "=")
			s, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return opt, usagef("--layer-sparsity %q: want NAME=S", kv)
			}
			opt.LayerSparsity[k] = s
		}
	}
	return opt, nil
}

type sizeInfo struct {
	Bytes     int64 `json:"bytes"`
	GzipBytes int64 `json:"gzip_bytes"`
	Params    int   `json:"params"`
	NonZeros  int   `json:"nonzeros"`
}

type layerReport struct {
	Name          string  `json:"name"`
	Out           int     `json:"out"`
	In            int     `json:"in"`
	Params        int     `json:"params"`
	NonZerosBef   int     `json:"nonzeros_before"`
	NonZeros      int     `json:"nonzeros"`
	Density       float64 `json:"density"`
	Format        string  `json:"format"`
	TensorBytes   int64   `json:"tensor_bytes"`
	BiasShiftNorm float64 `json:"bias_shift_norm"`
	Predicted     float64 `json:"predicted_error"`
	Local         string  `json:"local_objective,omitempty"` // why the layer is analysed on its own output (analysis.LocalObjectives)
}

type qualityPair struct {
	Original *analysis.Quality `json:"original"`
	Pruned   *analysis.Quality `json:"pruned"`
}

type pruneReport struct {
	Model          string        `json:"model"`
	Output         string        `json:"output"`
	Method         string        `json:"method"`
	Sparsity       float64       `json:"sparsity"`
	NM             string        `json:"nm,omitempty"`
	Scope          string        `json:"scope"`
	Objective      string        `json:"objective"`
	Refit          string        `json:"refit,omitempty"`
	Task           string        `json:"task"`
	Derivatives    string        `json:"derivatives"`
	Seed           uint64        `json:"seed"`
	Samples        int           `json:"calibration_samples"`
	Holdout        int           `json:"holdout_samples"`
	Removed        int           `json:"removed"`
	Prunable       int           `json:"prunable"`
	Before         sizeInfo      `json:"before"`
	After          sizeInfo      `json:"after"`
	Layers         []layerReport `json:"layers"`
	Calibration    qualityPair   `json:"calibration"`
	HoldoutQ       *qualityPair  `json:"holdout,omitempty"`
	PredictedSqErr *float64      `json:"predicted_sq_err_per_sample,omitempty"`
	// PredictedClamped: the sum came out below zero (rounding) and was
	// reported as 0.
	PredictedClamped bool   `json:"predicted_clamped_to_zero,omitempty"`
	Note             string `json:"note"`
	Seconds          struct {
		Analysis float64 `json:"analysis"`
		Select   float64 `json:"select"`
		Write    float64 `json:"write"`
		Evaluate float64 `json:"evaluate"`
	} `json:"seconds"`
}

func runPrune(e *env, f *pruneFlags, args []string) error {
	if len(args) != 1 {
		return usagef("prune takes one model file")
	}
	in := args[0]
	if f.output == "" {
		return usagef("-o OUT is required")
	}
	if f.external < 0 {
		return usagef("--external-data %d: want a size in bytes, or 0 to keep the input's layout", f.external)
	}
	if f.external == 0 {
		// The pruned model keeps the input's external data files, beside -o.
		e.derived = func(m *onnxio.Model) []fileRef {
			var out []fileRef
			for _, loc := range m.ExternalLocations() {
				out = append(out, fileRef{"-o's external data file", filepath.Join(filepath.Dir(f.output), loc)})
			}
			return out
		}
	}
	format, err := export.ParseFormat(f.format)
	if err != nil {
		return usagef("--format: %v", err)
	}
	switch f.granularity {
	case "weight":
		f.af.noStats = false // the flags outlive a run in tests
	case "neuron":
		return runPruneUnits(e, f, in)
	default:
		return usagef("--granularity %q: want weight or neuron", f.granularity)
	}
	opt, err := f.pruneOptions(e.fs)
	if err != nil {
		return err
	}
	if err := checkFraction("--sparsity", opt.Sparsity); err != nil {
		return err
	}
	for name, s := range opt.LayerSparsity {
		if err := checkFraction("--layer-sparsity "+name, s); err != nil {
			return err
		}
	}
	if _, err := analysis.CriterionByName(f.method); err != nil && f.method != "exact" && !analysis.Sequential(f.method) {
		return usagef("--method: %v%s", err, methodHint(f.method, append(analysis.Methods(), "ec+", "exact")))
	}
	sparseNote := ""
	e.loadedCheck = func(m *onnxio.Model) error {
		sparseNote = export.SparseNote(m)
		return export.CheckFormat(m, format)
	}
	needGrad := analysis.NeedsLabels(f.method)
	if needGrad && f.af.labels == "" {
		return usagef("method %s needs labels (--labels)", f.method)
	}
	j, err := e.newJob(in, &f.af, needGrad, f.method == "ec+")
	if err != nil {
		return err
	}
	defer j.src.Close()
	// One method, one model: scoring may consume the statistics and
	// selection the scores. ec+ reuses the statistics themselves with
	// exact derivatives, not with probes (which large models use).
	j.oneShot = f.method != "ec+" || f.af.probes > 0
	j.keepScores = f.scores != ""
	r, err := j.pruneOne(f, opt, format, f.output)
	if err != nil {
		return err
	}
	if sparseNote != "" {
		r.Note = sparseNote + "; " + r.Note
	}
	if f.report != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := e.stage.WriteFile(f.report, append(b, '\n')); err != nil {
			return err
		}
	}
	return e.output(r, func(w io.Writer) { printPruneReport(w, r) })
}

// pruneOne prunes with one method and options, writes out, and measures.
func (j *job) pruneOne(f *pruneFlags, opt prune.Options, format export.Format, out string) (*pruneReport, error) {
	e := j.e
	r := &pruneReport{
		Model: j.ld.path, Output: out, Method: f.method, Sparsity: opt.Sparsity, Scope: string(opt.Scope),
		Objective: objectiveName(f.af.objective, j.task), Task: string(j.task), Derivatives: j.stats.Mode.String(), Seed: f.af.seed, Samples: j.stats.N, Note: densifyNote,
	}
	if opt.NM != nil {
		r.NM = f.nm
		r.Scope = "layer"
	}
	if j.hold != nil {
		r.Holdout = j.hold.N()
	}
	r.Seconds.Analysis = j.statTime.Seconds()
	t := time.Now()
	plan, err := j.plan(f.method, opt)
	if err != nil {
		return nil, err
	}
	r.Refit = plan.Objective
	r.Seconds.Select = time.Since(t).Seconds()
	layers := planLayerReports(plan)
	t = time.Now()
	var results []export.TensorResult
	if plan.Removed == 0 && f.external == 0 {
		// Nothing removed: the input as it is, byte for byte (no bias
		// added, no metadata).
		if err := j.copyInput(out); err != nil {
			return nil, err
		}
		for range layers {
			results = append(results, export.TensorResult{Format: "unchanged"})
		}
	} else if results, err = j.writePruned(plan, f, format, opt, out); err != nil {
		return nil, err
	}
	r.Seconds.Write = time.Since(t).Seconds()
	if f.scores != "" {
		if err := j.writeScores(f.method, f.scores); err != nil {
			return nil, err
		}
	}
	// Sizes: gzip of a large model takes seconds, so both files are
	// measured in the background while the output is read back and
	// evaluated.
	// What this run wrote is measured and read back from its staged files,
	// whatever another process does at -o meanwhile.
	before, afterSize := measureAsync(j.ld.path, nil), measureAsync(out, e.stage)
	am, err := onnxio.LoadStaged(out, e.stage)
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", out, err)
	}
	anet, err := onnxio.Extract(am, onnxio.ExtractOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", out, err)
	}
	after := &loaded{path: out, net: anet} // only its network is measured and evaluated
	r.Removed, r.Prunable = plan.Removed, plan.Total
	for k, lr := range layers {
		if k < len(results) {
			lr.Format, lr.TensorBytes = string(results[k].Format), results[k].Bytes
		}
		if j.stats != nil {
			lr.Local = j.stats.Local[plan.Layers[k].Layer]
		}
		r.Layers = append(r.Layers, lr)
	}
	if f.method == "ec" && f.af.objective == "output" {
		var p float64
		for _, lp := range plan.Layers {
			p += lp.Predicted
		}
		if p < 0 {
			// Rounding in S2 - S1²/S0 can leave a sum of zeros slightly
			// negative; an error is never below zero.
			p = 0
			r.PredictedClamped = true
		}
		r.PredictedSqErr = &p
	}
	// Quality: the pruned network as written (read back from the file).
	t = time.Now()
	if err := after.net.Err(out); err != nil {
		return nil, err
	}
	r.Calibration.Original, r.Calibration.Pruned, err = j.compare(after.net, j.src, j.labels)
	if err != nil {
		return nil, err
	}
	if j.hold != nil {
		var hq qualityPair
		if hq.Original, hq.Pruned, err = j.compare(after.net, j.hold, j.hlabels); err != nil {
			return nil, err
		}
		r.HoldoutQ = &hq
	}
	r.Seconds.Evaluate = time.Since(t).Seconds()
	if r.Before, err = before.wait(j.ld.net); err != nil {
		return nil, err
	}
	if r.After, err = afterSize.wait(after.net); err != nil {
		return nil, err
	}
	return r, nil
}

// objectiveName says in words what removal is measured on.
func objectiveName(objective string, task analysis.Task) string {
	if objective == "loss" {
		if task == analysis.TaskClassification {
			return "loss (cross-entropy on the labels)"
		}
		return "loss (squared error against the labels)"
	}
	return "output (squared change of the model's outputs)"
}

// writePruned applies the plan to the model and stages the result at out.
func (j *job) writePruned(plan *prune.Plan, f *pruneFlags, format export.Format, opt prune.Options, out string) ([]export.TensorResult, error) {
	pm, results, err := j.write(plan, format, f.addBias, j.metadata(f.method, opt))
	if err != nil {
		return nil, err
	}
	if j.oneShot {
		// The written model has what it needs of the source's protobuf
		// and of the plan's weights (counted before): let them go before
		// the model is saved and read back.
		for _, lp := range plan.Layers {
			lp.W, lp.Pruned = nil, nil
		}
		j.ld.model = nil
	}
	return results, export.SaveStaged(pm, out, f.external, j.e.stage)
}

// copyInput stages the input model and its external data files unchanged
// at out (and beside it).
func (j *job) copyInput(out string) error {
	m := j.ld.model
	b, err := os.ReadFile(m.Path)
	if err != nil {
		return &onnxio.BadInputError{File: m.Path, Msg: "cannot read: " + err.Error()}
	}
	if err := j.e.stage.WriteFile(out, b); err != nil {
		return err
	}
	for _, loc := range m.ExternalLocations() {
		b, err := os.ReadFile(filepath.Join(m.Dir, loc))
		if err != nil {
			return &onnxio.BadInputError{File: m.Path, Msg: "external data: " + err.Error()}
		}
		target := filepath.Join(filepath.Dir(out), loc)
		if err := j.e.stage.MkdirAll(filepath.Dir(target)); err != nil {
			return err
		}
		if err := j.e.stage.WriteFile(target, b); err != nil {
			return err
		}
	}
	return nil
}

// planLayerReports gives each layer's counts of a plan (its format and
// bytes are filled in once written).
func planLayerReports(plan *prune.Plan) []layerReport {
	out := make([]layerReport, 0, len(plan.Layers))
	for _, lp := range plan.Layers {
		lr := layerReport{Name: lp.Layer.Name, Out: lp.Layer.Out, In: lp.Layer.In, Params: lp.Layer.Params(), Density: lp.Density(), Predicted: max(0, lp.Predicted)}
		for q, w := range lp.W {
			if w != 0 {
				lr.NonZeros++
			}
			if lp.Layer.At(q) != 0 {
				lr.NonZerosBef++
			}
		}
		var ss float64
		for _, d := range lp.BiasShift {
			ss += d * d
		}
		lr.BiasShiftNorm = math.Sqrt(ss)
		out = append(out, lr)
	}
	return out
}

// compare measures the original and a pruned network on a data set.
func (j *job) compare(pruned *onnxio.Network, src *calib.Source, labels *analysis.Labels) (orig, pr *analysis.Quality, err error) {
	d := sourceData{Src: src}
	if labels != nil {
		if orig, err = analysis.Evaluate(j.ld.net, nil, d, labels, j.task, j.af.batch, nil); err != nil {
			return nil, nil, err
		}
	} else {
		orig = &analysis.Quality{N: src.N()}
	}
	pr, err = analysis.Evaluate(pruned, j.ld.net, d, labels, j.task, j.af.batch, nil)
	if err == nil && j.regression() {
		pr.ArgmaxSame = nil // no classes: the agreement means nothing
	}
	return orig, pr, err
}

// writeScores saves a method's scores and deltas as .npz.
func (j *job) writeScores(method, path string) error {
	var sc *analysis.Scores
	var err error
	if analysis.Sequential(method) {
		sc, err = j.methodScores("ec")
	} else {
		sc, err = j.methodScores(method)
	}
	if err != nil {
		return err
	}
	arrays := map[string][]float64{}
	shapes := map[string][]int{}
	for _, ls := range sc.Layers {
		arrays[ls.Layer.Name+".importance"] = ls.Score
		shapes[ls.Layer.Name+".importance"] = []int{ls.Layer.Out, ls.Layer.In}
		d := ls.Delta
		if d == nil {
			d = make([]float64, len(ls.Score))
		}
		arrays[ls.Layer.Name+".delta"] = d
		shapes[ls.Layer.Name+".delta"] = []int{ls.Layer.Out, ls.Layer.In}
	}
	return saveNpz(path, arrays, shapes, j.e.stage)
}

func printPruneReport(w io.Writer, r *pruneReport) {
	what := fmt.Sprintf("%.1f%% %s", 100*r.Sparsity, r.Scope)
	if r.NM != "" {
		what = r.NM + " (N:M)"
	}
	fmt.Fprintf(w, "%s -> %s: method %s, %s, task %s, objective: %s, %d calibration samples (derivatives: %s)\n",
		r.Model, r.Output, r.Method, what, r.Task, r.Objective, r.Samples, r.Derivatives)
	if r.Refit != "" {
		fmt.Fprintf(w, "%s\n", r.Refit)
	}
	fmt.Fprintf(w, "removed %d of %d prunable weights\n\n", r.Removed, r.Prunable)
	printBeforeAfter(w, []beforeAfter{
		{"size on disk", r.Before.Bytes, r.After.Bytes, true},
		{"gzip size", r.Before.GzipBytes, r.After.GzipBytes, true},
		{"dense weights", int64(r.Before.Params), int64(r.After.Params), false},
		{"non-zeros", int64(r.Before.NonZeros), int64(r.After.NonZeros), false},
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "layer\tW\tdensity\tformat\tbytes\t|bias shift|")
	for _, l := range r.Layers {
		fmt.Fprintf(tw, "%s\t%dx%d\t%.3f\t%s\t%s\t%.4g\n", l.Name, l.Out, l.In, l.Density, l.Format, humanBytes(l.TensorBytes), l.BiasShiftNorm)
	}
	tw.Flush()
	for _, l := range r.Layers {
		if l.Local != "" {
			fmt.Fprintf(w, "%s: analysed with its local objective (its own output's change): %s\n", l.Name, l.Local)
		}
	}
	fmt.Fprintln(w)
	printQuality(w, "calibration", r.Calibration)
	if r.HoldoutQ != nil {
		printQuality(w, "holdout", *r.HoldoutQ)
	}
	if r.PredictedSqErr != nil {
		clamped := ""
		if r.PredictedClamped {
			clamped = ", clamped to 0 from a slightly negative sum (rounding)"
		}
		fmt.Fprintf(w, "first-order predicted output error: %.4g per sample (sum of removed importances%s; measured on calibration: %.4g)\n", *r.PredictedSqErr, clamped, deref(r.Calibration.Pruned.SqErr))
	}
	fmt.Fprintf(w, "note: %s\n", r.Note)
}

func deref(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func printQuality(w io.Writer, name string, q qualityPair) {
	p := q.Pruned
	fmt.Fprintf(w, "%s (%d samples): output MSE %.4g, max |diff| %.4g", name, p.N, deref(p.MSE), deref(p.MaxAbs))
	if p.ArgmaxSame != nil {
		fmt.Fprintf(w, ", argmax agreement %.4f", *p.ArgmaxSame)
	}
	if p.Loss != nil && q.Original.Loss != nil {
		fmt.Fprintf(w, "; loss %.4g -> %.4g", *q.Original.Loss, *p.Loss)
	}
	if p.Accuracy != nil && q.Original.Accuracy != nil {
		fmt.Fprintf(w, "; accuracy %.4f -> %.4f", *q.Original.Accuracy, *p.Accuracy)
	}
	fmt.Fprintln(w)
}

// beforeAfter is one row of a size table: a quantity before and after
// pruning, in bytes (human) or as a count.
type beforeAfter struct {
	name  string
	a, b  int64
	human bool
}

// printBeforeAfter prints size rows with their after/before ratio.
func printBeforeAfter(w io.Writer, rows []beforeAfter) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tbefore\tafter\tratio\t")
	for _, r := range rows {
		if r.human {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t\n", r.name, humanBytes(r.a), humanBytes(r.b), float64(r.b)/float64(max(1, r.a)))
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t\n", r.name, r.a, r.b, float64(r.b)/float64(max(1, r.a)))
		}
	}
	tw.Flush()
}
