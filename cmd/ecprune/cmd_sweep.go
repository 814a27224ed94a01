package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
)

const sweepDefaultSparsities = "0.1:0.9:0.1"

type sweepFlags struct {
	af         analysisFlags
	test       []string
	testLabels string
	testLimit  int
	methods    []string
	sparsities string
	scope      string
	csv        string
	plot       string
	saveDir    string
}

// files lists what sweep reads and writes, --plot's figures included; the
// --save-dir models are checked once the methods and sparsities are known.
func (f *sweepFlags) files(args []string) (in, out []fileRef) {
	in = append(refs("the model", args...), refs("--calib", f.af.calib...)...)
	in = append(in, refs("--labels", f.af.labels)...)
	in = append(in, refs("--test", f.test...)...)
	in = append(in, refs("--test-labels", f.testLabels)...)
	out = refs("--csv", f.csv)
	if f.plot != "" {
		out = append(out, refs("--plot", plotFiles(f.plot)...)...)
	}
	return in, out
}

func (f *sweepFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.test, "test", nil, "test inputs the pruned models are evaluated on (.npy, .npz or .pb, like --calib; required)")
	fs.StringVar(&f.testLabels, "test-labels", "", "labels of the test samples: test loss, and accuracy for classification")
	fs.IntVar(&f.testLimit, "test-limit", 0, "use at most this many test samples (0: all)")
	fs.StringSliceVar(&f.methods, "methods", nil, "methods to compare, e.g. ec,magnitude (default: "+sweepDefaultHelp()+")")
	fs.StringVar(&f.sparsities, "sparsities", sweepDefaultSparsities, "sparsities to prune at: a list 0.5,0.8,0.9 or START:STOP:STEP with STOP included")
	fs.StringVar(&f.scope, "scope", "global", "rank weights over all layers (global) or within each layer (layer)")
	fs.StringVar(&f.csv, "csv", "", "write the results table to this CSV file")
	fs.StringVar(&f.plot, "plot", "", "write the test loss figure (the output error when there are no test labels) to F.png or F.svg, and F-accuracy (classification), F-error and F-size beside it")
	fs.StringVar(&f.saveDir, "save-dir", "", "also save every pruned model (auto format) in this folder as METHOD_sS.onnx, e.g. ec_s0.80.onnx")
	f.af.register(fs)
}

func init() {
	f := &sweepFlags{}
	register(&command{
		name:    "sweep",
		summary: "compare pruning methods over a range of sparsities: test loss, accuracy, output error, file size",
		usage:   "MODEL --calib X.npy --test XT.npy [--test-labels YT.npy] [flags]",
		examples: []string{
			"ecprune sweep model.onnx --calib calib_x.npy --test test_x.npy",
			"ecprune sweep model.onnx --calib calib_x.npy --labels calib_y.npy --test test_x.npy --test-labels test_y.npy --sparsities 0.1:0.95:0.05 --csv sweep.csv --json=sweep.json --plot sweep.png",
			"ecprune sweep model.onnx --calib x.npy --test xt.npy --methods ec,magnitude --sparsities 0.5,0.8,0.9 --save-dir pruned/",
		},
		flags: f.register,
		run:   func(e *env, args []string) error { return runSweep(e, f, args) },
		files: f.files,
	})
}

// The points are the library's, with its JSON field names.
type (
	sweepSize  = ecprune.SweepSize
	sweepPoint = ecprune.SweepPoint
	sweepDense = ecprune.SweepDense
)

type sweepResult struct {
	Model       string `json:"model"`
	Task        string `json:"task,omitempty"`
	Objective   string `json:"objective"`
	Derivatives string `json:"derivatives"`
	Scope       string `json:"scope"`
	Seed        uint64 `json:"seed"`
	Calibration int    `json:"calibration_samples"`
	TestSamples int    `json:"test_samples"`
	TestLabels  bool   `json:"test_labels"`
	// StatisticsPasses counts the batches the one statistics pass read:
	// every point reuses them, so it does not grow with the points.
	StatisticsPasses int          `json:"statistics_passes"`
	Methods          []string     `json:"methods"`
	Sparsities       []float64    `json:"sparsities"`
	Dense            sweepDense   `json:"dense"`
	Points           []sweepPoint `json:"points"`
	Plots            []string     `json:"plots,omitempty"`
	CSV              string       `json:"csv,omitempty"`
	SaveDir          string       `json:"save_dir,omitempty"`
	Note             string       `json:"note"`
}

func runSweep(e *env, f *sweepFlags, args []string) error {
	if len(args) == 2 && e.json && strings.HasSuffix(args[1], ".json") {
		return usagef("--json takes its file with '=': --json=%s (a bare --json prints the JSON on stdout)", args[1])
	}
	if len(args) != 1 {
		return usagef("sweep takes one model file")
	}
	model := args[0]
	if len(f.test) == 0 {
		return usagef("--test is required: the data the pruned models are evaluated on")
	}
	sparsities, err := parseSparsities(f.sparsities)
	if err != nil {
		return err
	}
	opt := ecprune.SweepOptions{
		Analysis: f.af.analysis(e), Sparsities: sparsities, Scope: ecprune.Scope(f.scope),
		Test: ecprune.Data{Inputs: f.test, Labels: f.testLabels}, TestLimit: f.testLimit,
		SaveDir: f.saveDir, Stage: e.stage,
	}
	if err := opt.Validate(); err != nil {
		return cliError(err)
	}
	methods, err := sweepMethods(f.methods, f.af.labels != "")
	if err != nil {
		return err
	}
	opt.Methods = methods
	// Every output is checked before the analysis (the others in run),
	// so that a typo does not cost a long run.
	if f.plot != "" {
		if _, err := plotFormat(f.plot); err != nil {
			return err
		}
	}
	if f.saveDir != "" {
		if err := e.stage.MkdirAll(f.saveDir); err != nil {
			return &onnxio.BadInputError{File: f.saveDir, Msg: fmt.Sprintf("cannot create the --save-dir folder: %v", err)}
		}
		for _, m := range methods {
			for _, s := range sparsities {
				e.outputs = append(e.outputs, fileRef{"a --save-dir model", filepath.Join(f.saveDir, sweepFileName(m, s))})
			}
		}
		// Every saved model keeps the input's external data layout: one
		// model with external data would have them all write one file.
		e.derived = func(m *onnxio.Model) []fileRef {
			var out []fileRef
			for _, loc := range m.ExternalLocations() {
				out = append(out, fileRef{"the --save-dir models' external data file", filepath.Join(f.saveDir, loc)})
			}
			return out
		}
		if err := checkFiles(e.inputs, e.outputs); err != nil {
			return err
		}
	}
	ld, err := e.loadModel(model, true)
	if err != nil {
		return err
	}
	sr, err := ecprune.Sweep(context.Background(), ld.m, f.af.data(), opt)
	if err != nil {
		return modelError(err)
	}
	r := &sweepResult{
		Model: sr.Model, Task: sr.Task, Objective: sr.Objective, Derivatives: sr.Derivatives, Scope: sr.Scope, Seed: sr.Seed,
		Calibration: sr.Calibration, TestSamples: sr.TestSamples, TestLabels: sr.TestLabels, StatisticsPasses: sr.StatisticsPasses,
		Methods: sr.Methods, Sparsities: sr.Sparsities, Dense: sr.Dense, Points: sr.Points, CSV: f.csv, SaveDir: sr.SaveDir, Note: sr.Note,
	}
	if f.csv != "" {
		if err := writeSweepCSV(f.csv, r, e.stage); err != nil {
			return err
		}
	}
	if f.plot != "" {
		if r.Plots, err = plotSweep(f.plot, r, e.stage); err != nil {
			return err
		}
		e.logf("figures: %s", strings.Join(r.Plots, ", "))
	}
	return e.output(r, func(w io.Writer) { printSweep(w, r) })
}

// sweepDefaultHelp lists the methods a sweep compares by default.
func sweepDefaultHelp() string {
	var plain, labelled []string
	for _, m := range ecprune.SweepMethods(true) {
		if m.Needs.Labels {
			labelled = append(labelled, m.Name)
		} else {
			plain = append(plain, m.Name)
		}
	}
	return strings.Join(plain, ",") + ", plus " + strings.Join(labelled, ",") + " with --labels; others only when named"
}

// sweepMethods resolves --methods: the defaults, or the named methods,
// checked and without repeats.
func sweepMethods(names []string, labels bool) ([]string, error) {
	out, err := ecprune.SweepOptions{Methods: names, Analysis: ecprune.Analysis{OptionNames: flagName}}.MethodsOf(labels)
	return out, cliError(err)
}

// parseSparsities reads "0.5,0.8" or "START:STOP:STEP" (STOP included when
// the steps reach it), sorted and without repeats.
func parseSparsities(spec string) ([]float64, error) {
	bad := func(format string, args ...any) error {
		return usagef("--sparsities %q: %s", spec, fmt.Sprintf(format, args...))
	}
	var out []float64
	if strings.Contains(spec, ":") {
		parts := strings.Split(spec, ":")
		if len(parts) != 3 {
			return nil, bad("want START:STOP:STEP, e.g. 0.1:0.9:0.1")
		}
		var v [3]float64
		for i, p := range parts {
			x, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return nil, bad("%q is not a number", p)
			}
			v[i] = x
		}
		if v[2] <= 0 || v[1] < v[0] {
			return nil, bad("want STEP > 0 and STOP >= START")
		}
		// The tolerance keeps STOP when rounding leaves (STOP-START)/STEP
		// a hair under a whole number.
		n := int(math.Floor((v[1]-v[0])/v[2] + 1e-9))
		if n > 10000 {
			return nil, bad("%d points is too many", n+1)
		}
		for i := 0; i <= n; i++ {
			out = append(out, v[0]+float64(i)*v[2])
		}
	} else {
		for _, p := range strings.Split(spec, ",") {
			if strings.TrimSpace(p) == "" {
				continue
			}
			x, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return nil, bad("%q is not a number", p)
			}
			out = append(out, x)
		}
	}
	for i, s := range out {
		// Rounded to 9 decimals so that 0.1+2*0.1 is the 0.3 that
		// `prune --sparsity 0.3` parses.
		s = math.Round(s*1e9) / 1e9
		if !(s >= 0 && s < 1) {
			return nil, bad("sparsity %g is outside [0, 1)", s)
		}
		out[i] = s
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, bad("no sparsity given")
	}
	return out, nil
}

// sweepFileName names a saved point: ec_s0.80.onnx.
func sweepFileName(method string, s float64) string { return ecprune.SweepFileName(method, s) }

// sparsityLabel prints s with at least two decimals and as many as it
// needs, so that names sort and never collide.
func sparsityLabel(s float64) string { return ecprune.SparsityLabel(s) }

func fmtOpt(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'g', 4, 64)
}

// csvFloat writes a float exactly (shortest round-trip form), empty when
// absent.
func csvFloat(p *float64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// writeSweepCSV writes one row per point, after a "dense" row for the
// unpruned model at sparsity 0.
func writeSweepCSV(path string, r *sweepResult, st *onnxio.Stage) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"method", "sparsity", "removed", "prunable", "nonzeros", "test_loss", "test_accuracy",
		"output_mse", "output_sq_err_per_sample", "output_max_abs", "argmax_agreement", "predicted_sq_err_per_sample",
		"auto_bytes", "auto_gzip_bytes", "dense_bytes", "dense_gzip_bytes", "file"})
	i64 := func(v int64) string { return strconv.FormatInt(v, 10) }
	d := r.Dense
	w.Write([]string{"dense", "0", "0", strconv.Itoa(d.Params), strconv.Itoa(d.NonZeros), csvFloat(d.Test.Loss), csvFloat(d.Test.Accuracy),
		"", "", "", "", "", i64(d.Bytes), i64(d.GzipBytes), i64(d.Bytes), i64(d.GzipBytes), d.File})
	for _, p := range r.Points {
		q := p.Test
		w.Write([]string{p.Method, strconv.FormatFloat(p.Sparsity, 'g', -1, 64), strconv.Itoa(p.Removed), strconv.Itoa(p.Prunable), strconv.Itoa(p.NonZeros),
			csvFloat(q.Loss), csvFloat(q.Accuracy), csvFloat(q.MSE), csvFloat(q.SqErr), csvFloat(q.MaxAbs), csvFloat(q.ArgmaxSame), csvFloat(p.Predicted),
			i64(p.Size.AutoBytes), i64(p.Size.AutoGzip), i64(p.Size.DenseBytes), i64(p.Size.DenseGzip), p.File})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return st.WriteFile(path, b.Bytes())
}

func printSweep(w io.Writer, r *sweepResult) {
	fmt.Fprintf(w, "%s: %d methods x %d sparsities (%s scope, objective %s); statistics computed once: %d passes over %d calibration samples; %d test samples\n",
		r.Model, len(r.Methods), len(r.Sparsities), r.Scope, r.Objective, r.StatisticsPasses, r.Calibration, r.TestSamples)
	d := r.Dense
	fmt.Fprintf(w, "dense model: %s on disk (gzip %s)", humanBytes(d.Bytes), humanBytes(d.GzipBytes))
	if d.Test.Loss != nil {
		fmt.Fprintf(w, ", test loss %.4g", *d.Test.Loss)
	}
	if d.Test.Accuracy != nil {
		fmt.Fprintf(w, ", accuracy %.4f", *d.Test.Accuracy)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tsparsity\ttest loss\taccuracy\toutput err\tauto file\tgzip dense\t")
	for _, p := range r.Points {
		acc := "-"
		if p.Test.Accuracy != nil {
			acc = fmt.Sprintf("%.4f", *p.Test.Accuracy)
		}
		fmt.Fprintf(tw, "%s\t%.1f%%\t%s\t%s\t%s\t%s\t%s\t\n", p.Method, 100*p.Sparsity, fmtOpt(p.Test.Loss), acc, fmtOpt(p.Test.SqErr),
			humanBytes(p.Size.AutoBytes), humanBytes(p.Size.DenseGzip))
	}
	tw.Flush()
	fmt.Fprintln(w, "\noutput err: mean over test samples of ||y - y_dense||^2; auto file: what prune writes (--format auto); gzip dense: the dense-format file (zeros stored) gzipped")
	for _, p := range r.Plots {
		fmt.Fprintf(w, "figure: %s\n", p)
	}
	if r.CSV != "" {
		fmt.Fprintf(w, "table: %s\n", r.CSV)
	}
	fmt.Fprintf(w, "note: %s\n", r.Note)
}
