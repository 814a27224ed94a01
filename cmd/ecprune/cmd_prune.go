package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
)

// densifyNote is said in every size report: sparse storage shrinks files,
// ONNX Runtime densifies it on load.
const densifyNote = ecprune.DensifyNote

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
	costWeighted  bool
}

func (f *pruneFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.output, "output", "o", "", "the pruned model to write (required; never the input)")
	fs.StringVar(&f.method, "method", ecprune.Recommended().Name, "pruning method: "+ecprune.MethodHelp())
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
	fs.BoolVar(&f.costWeighted, "cost-weighted", false, "with --granularity neuron: rank hidden units by score per multiply-add their removal saves (more work saved for the same count, at some loss)")
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

// The reports are the library's, with its JSON field names.
type (
	sizeInfo        = ecprune.Size
	layerReport     = ecprune.LayerReport
	qualityPair     = ecprune.QualityPair
	pruneReport     = ecprune.Report
	unitPruneReport = ecprune.UnitReport
)

// options turns the flags into the library's options.
func (f *pruneFlags) options(e *env) (ecprune.Options, error) {
	opt := ecprune.Options{
		Analysis: f.af.analysis(e),
		Method:   f.method, Granularity: ecprune.Granularity(f.granularity), Sparsity: f.sparsity,
		Scope: ecprune.Scope(f.scope), Skip: f.skip, NoNewBias: !f.addBias, NoReconstruct: !f.reconstruct, CostWeighted: f.costWeighted,
		ExternalData: f.external, KeepScores: f.scores != "",
	}
	format, err := ecprune.ParseFormat(f.format)
	if err != nil {
		return opt, usagef("--format: %v", err)
	}
	opt.Format = format
	fs := e.fs
	if opt.Granularity == ecprune.Neuron {
		// Flags that do not apply are refused when given, whatever their
		// value.
		for _, name := range []string{"nm", "layer-sparsity", "scores"} {
			if fs.Changed(name) {
				return opt, usagef("--%s does not apply to --granularity neuron (the output is a smaller dense model)", name)
			}
		}
		return opt, nil
	}
	if f.nm != "" {
		var n, m int
		if _, err := fmt.Sscanf(f.nm, "%d:%d", &n, &m); err != nil || fmt.Sprintf("%d:%d", n, m) != f.nm {
			return opt, usagef("--nm %q: want N:M, e.g. 2:4", f.nm)
		}
		if fs.Changed("sparsity") {
			return opt, usagef("--nm and --sparsity exclude each other")
		}
		opt.NM = &ecprune.NM{N: n, M: m}
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

func runPrune(e *env, f *pruneFlags, args []string) error {
	if len(args) != 1 {
		return usagef("prune takes one model file")
	}
	in := args[0]
	if f.output == "" {
		return usagef("-o OUT is required")
	}
	opt, err := f.options(e)
	if err != nil {
		return err
	}
	if err := opt.ValidateWith(f.af.data()); err != nil {
		return cliError(err)
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
	sparseNote := ""
	if opt.Granularity != ecprune.Neuron {
		e.loadedCheck = func(m *onnxio.Model) error {
			sparseNote = ecprune.SparseNote(m)
			return ecprune.CheckFormat(m, opt.Format)
		}
	}
	ld, err := e.loadModel(in, true)
	if err != nil {
		return err
	}
	res, err := ecprune.Prune(context.Background(), ld.m, f.af.data(), opt)
	if err != nil {
		return modelError(err)
	}
	defer res.Close()
	if err := res.SaveStaged(f.output, e.stage); err != nil {
		return modelError(err)
	}
	if f.scores != "" {
		if err := res.WriteScores(f.scores, e.stage); err != nil {
			return err
		}
	}
	var r any
	var text func(io.Writer)
	if u := res.Units; u != nil {
		r, text = u, func(w io.Writer) { printUnitReport(w, u) }
	} else {
		pr := res.Report
		if sparseNote != "" {
			pr.Note = sparseNote + "; " + pr.Note
		}
		r, text = pr, func(w io.Writer) { printPruneReport(w, pr) }
	}
	if f.report != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := e.stage.WriteFile(f.report, append(b, '\n')); err != nil {
			return err
		}
	}
	return e.output(r, text)
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
