package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
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

// sweepDefaultMethods are compared when --methods is not given; the
// label-based criteria join them when --labels is given. exact is left out:
// it costs a forward pass per weight.
var (
	sweepDefaultMethods = []string{"ec", "ec+", "magnitude", "wanda", "random"}
	sweepLabelMethods   = []string{"gradient", "taylor"}
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
	fs.StringSliceVar(&f.methods, "methods", nil, "criteria to compare, e.g. ec,magnitude (default: "+strings.Join(sweepDefaultMethods, ",")+", plus "+strings.Join(sweepLabelMethods, ",")+" with --labels; exact only when named)")
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

// sweepSize is the size of the file a point's pruning gives, stored two
// ways.
type sweepSize struct {
	AutoBytes  int64 `json:"auto_bytes"`       // what prune --format auto writes
	AutoGzip   int64 `json:"auto_gzip_bytes"`  // that file gzipped
	DenseBytes int64 `json:"dense_bytes"`      // --format dense: zeros stored
	DenseGzip  int64 `json:"dense_gzip_bytes"` // that file gzipped (zeros compress)
}

type sweepPoint struct {
	Method   string            `json:"method"`
	Sparsity float64           `json:"sparsity"`
	Removed  int               `json:"removed"`
	Prunable int               `json:"prunable"`
	NonZeros int               `json:"nonzeros"`
	Test     *analysis.Quality `json:"test"`
	// Predicted is the sum of the removed weights' importances: for ec on
	// the output objective, the first-order predicted output error.
	Predicted *float64  `json:"predicted_sq_err_per_sample,omitempty"`
	Size      sweepSize `json:"size"`
	File      string    `json:"file,omitempty"`
}

type sweepDense struct {
	File      string            `json:"file"`
	Bytes     int64             `json:"bytes"`
	GzipBytes int64             `json:"gzip_bytes"`
	Params    int               `json:"params"`
	NonZeros  int               `json:"nonzeros"`
	Test      *analysis.Quality `json:"test"`
}

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
	switch prune.Scope(f.scope) {
	case prune.Global, prune.Layer:
	default:
		return usagef("--scope %q: want global or layer", f.scope)
	}
	methods, err := sweepMethods(f.methods, f.af.labels != "")
	if err != nil {
		return err
	}
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
	// The test data and labels are read before the analysis too. The
	// model's inputs are all that is needed for that; newJob loads the
	// model again, with its warnings.
	mp, err := onnxio.Load(model)
	if err != nil {
		return err
	}
	if err := e.checkModelFiles(mp); err != nil {
		return err
	}
	if f.saveDir != "" && len(mp.ExternalLocations()) > 0 && len(methods)*len(sparsities) > 1 {
		return &onnxio.BadInputError{File: model, Msg: "has external data, which every --save-dir model would write to the same file: save one point at a time with prune, or leave out --save-dir"}
	}
	pre, err := onnxio.Extract(mp, onnxio.ExtractOptions{})
	if err != nil {
		return err
	}
	test, err := e.openData(pre, f.test, f.af.batch, f.testLimit)
	if err != nil {
		return err
	}
	defer test.Close()
	var traw *calib.Labels
	if f.testLabels != "" {
		if traw, err = test.LoadLabels(f.testLabels); err != nil {
			return err
		}
		// Checked now against the model; converted for the task once the
		// calibration labels have decided it.
		width, err := outputWidth(pre, test)
		if err != nil {
			return fmt.Errorf("%s: %w", model, err)
		}
		if _, _, err := prepareLabels(f.testLabels, traw, f.af.task, width); err != nil {
			return err
		}
	} else {
		e.logf("no --test-labels: measuring only the output error against the dense model, not test loss or accuracy")
	}

	needGrad := slices.ContainsFunc(methods, analysis.NeedsLabels)
	j, err := e.newJob(model, &f.af, needGrad, slices.Contains(methods, "ec+"))
	if err != nil {
		return err
	}
	defer j.src.Close()
	task := j.task
	var tlabels *analysis.Labels
	if traw != nil {
		tflag := string(task)
		if j.labels == nil {
			// Without calibration labels the test labels decide the task.
			tflag = f.af.task
		}
		width, err := outputWidth(j.ld.net, test)
		if err != nil {
			return fmt.Errorf("%s: %w", model, err)
		}
		if tlabels, task, err = prepareLabels(f.testLabels, traw, tflag, width); err != nil {
			return err
		}
	}

	r := &sweepResult{
		Model: model, Objective: f.af.objective, Derivatives: j.stats.Mode.String(), Scope: f.scope, Seed: f.af.seed,
		Calibration: j.stats.N, TestSamples: test.N(), TestLabels: tlabels != nil,
		StatisticsPasses: j.stats.Passes, Methods: methods, Sparsities: sparsities, Note: densifyNote,
		CSV: f.csv, SaveDir: f.saveDir,
	}
	if tlabels != nil || j.labels != nil {
		r.Task = string(task)
	}
	ds, err := modelSizes(model, j.ld.net)
	if err != nil {
		return err
	}
	r.Dense = sweepDense{File: model, Bytes: ds.Bytes, GzipBytes: ds.GzipBytes, Params: ds.Params, NonZeros: ds.NonZeros}
	if r.Dense.Test, err = analysis.Evaluate(j.ld.net, nil, sourceData{Src: test}, tlabels, task, f.af.batch, nil); err != nil {
		return fmt.Errorf("%s: evaluating the dense model on the test data: %w", model, err)
	}

	// Scores first, so that exact's own progress bar does not interleave
	// with the sweep's and a missing label fails before any point.
	for _, m := range methods {
		if analysis.Sequential(m) {
			m = "ec" // ec+ and sparsegpt start from ec's budgets
		}
		if _, err := j.methodScores(m); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "ecprune-sweep-*")
	if err != nil {
		return fmt.Errorf("sweep: temporary folder for size measurements: %w", err)
	}
	defer os.RemoveAll(tmp)
	e.stage.OnAbort(func() { os.RemoveAll(tmp) })

	total := len(methods) * len(sparsities)
	e.logf("sweep: %d methods x %d sparsities = %d points, every one reusing the statistics computed once", len(methods), len(sparsities), total)
	start := time.Now()
	p := e.newProgress("sweep", total)
	for _, m := range methods {
		for _, s := range sparsities {
			pt, err := j.sweepPoint(m, s, prune.Scope(f.scope), sourceData{Src: test}, tlabels, task, f.saveDir, tmp)
			if err != nil {
				p.finish()
				return fmt.Errorf("%s at sparsity %g: %w", m, s, err)
			}
			r.Points = append(r.Points, *pt)
			p.set(len(r.Points), total)
			e.debugf("sweep: %s s=%g: test loss %s, output error %s, %d bytes", m, s, fmtOpt(pt.Test.Loss), fmtOpt(pt.Test.SqErr), pt.Size.AutoBytes)
		}
	}
	p.finish()
	e.logf("sweep: %d points in %s (statistics: %d passes over the calibration data, once)", total, time.Since(start).Round(time.Millisecond), r.StatisticsPasses)

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

// sweepPoint prunes with one method at one sparsity, writes the file prune
// would write, measures its sizes and evaluates it as read back, so that a
// point equals a separate `prune` then `eval` run exactly.
func (j *job) sweepPoint(method string, s float64, scope prune.Scope, test analysis.Data, labels *analysis.Labels, task analysis.Task, saveDir, tmp string) (*sweepPoint, error) {
	opt := prune.Options{Sparsity: s, Scope: scope, Compensate: true}
	plan, err := j.plan(method, opt)
	if err != nil {
		return nil, err
	}
	meta := j.metadata(method, opt)
	pt := &sweepPoint{Method: method, Sparsity: s, Removed: plan.Removed, Prunable: plan.Total}
	if method == "ec" && j.af.objective == "output" {
		var sum float64
		for _, lp := range plan.Layers {
			sum += lp.Predicted
		}
		pt.Predicted = &sum
	}
	// The kept models are staged with the run's other outputs; the
	// measuring copies are written in the temporary folder at once.
	save := func(format export.Format, path string, st *onnxio.Stage) (export.Size, error) {
		pm, _, err := j.write(plan, format, true, meta)
		if err != nil {
			return export.Size{}, err
		}
		if err := export.SaveStaged(pm, path, 0, st); err != nil {
			return export.Size{}, err
		}
		return export.SizesStaged(path, st)
	}
	var st *onnxio.Stage
	auto := filepath.Join(tmp, "auto.onnx")
	if saveDir != "" {
		auto = filepath.Join(saveDir, sweepFileName(method, s))
		pt.File = auto
		st = j.e.stage
	}
	as, err := save(export.Auto, auto, st)
	if err != nil {
		return nil, err
	}
	dsz, err := save(export.Dense, filepath.Join(tmp, "dense.onnx"), nil)
	if err != nil {
		return nil, err
	}
	pt.Size = sweepSize{AutoBytes: as.Disk, AutoGzip: as.Gzip, DenseBytes: dsz.Disk, DenseGzip: dsz.Gzip}
	var m *onnxio.Model
	if st != nil {
		m, err = onnxio.LoadStaged(auto, st)
	} else {
		m, err = onnxio.Load(auto)
	}
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", auto, err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", auto, err)
	}
	if err := net.Err(auto); err != nil {
		return nil, err
	}
	_, pt.NonZeros, _ = export.Counts(net)
	if pt.Test, err = analysis.Evaluate(net, j.ld.net, test, labels, task, j.af.batch, nil); err != nil {
		return nil, fmt.Errorf("evaluating on the test data: %w", err)
	}
	return pt, nil
}

// sweepMethods resolves --methods: the defaults, or the named criteria,
// checked and without repeats.
func sweepMethods(names []string, labels bool) ([]string, error) {
	if len(names) == 0 {
		names = slices.Clone(sweepDefaultMethods)
		if labels {
			names = append(names, sweepLabelMethods...)
		}
	}
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" || slices.Contains(out, n) {
			continue
		}
		if n != "exact" && !analysis.Sequential(n) {
			if _, err := analysis.CriterionByName(n); err != nil {
				return nil, usagef("--methods: %v%s", err, methodHint(n, analysis.Methods()))
			}
		}
		if analysis.NeedsLabels(n) && !labels {
			return nil, usagef("method %s needs calibration labels (--labels)", n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, usagef("--methods names no method")
	}
	return out, nil
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
func sweepFileName(method string, s float64) string {
	return method + "_s" + sparsityLabel(s) + ".onnx"
}

// sparsityLabel prints s with at least two decimals and as many as it
// needs, so that names sort and never collide.
func sparsityLabel(s float64) string {
	l := strconv.FormatFloat(s, 'f', -1, 64)
	if i := strings.IndexByte(l, '.'); i < 0 {
		l += ".00"
	} else if d := len(l) - i - 1; d < 2 {
		l += strings.Repeat("0", 2-d)
	}
	return l
}

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
