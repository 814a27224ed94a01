package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// analysisFlags are the flags shared by prune and sweep: the data, the
// objective and how derivatives are taken.
type analysisFlags struct {
	calib       []string
	labels      string
	task        string
	objective   string
	batch       int
	limit       int
	holdout     float64
	ad          string
	probes      int
	seed        uint64
	exactBudget time.Duration
	force       bool
	ecplus      ecplus.Options
	// noStats: the job needs the model, data and labels but not the
	// weight-level statistics (structured pruning collects its own).
	noStats bool
}

func (f *analysisFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.calib, "calib", nil, "calibration inputs: .npy (first axis = samples), .npz keyed by input name, or TensorProto .pb (required)")
	fs.StringVar(&f.labels, "labels", "", "labels of the calibration samples (.npy class indices or float targets): enables loss, accuracy, gradient, taylor")
	fs.StringVar(&f.task, "task", "", "classification (cross-entropy on logits) or regression (squared error); default: from the labels' type")
	fs.StringVar(&f.objective, "objective", "output", "what removal is measured on: output (no labels needed) or loss (needs labels)")
	fs.IntVar(&f.batch, "batch", 256, "calibration samples per batch (bounds memory)")
	fs.IntVar(&f.limit, "limit", 0, "use at most this many calibration samples (0: all)")
	fs.Float64Var(&f.holdout, "holdout", 0, "fraction of the calibration samples (the last ones) kept out of the analysis to measure the error on")
	fs.StringVar(&f.ad, "ad", "auto", "derivatives by forward or reverse mode; auto picks the cheaper from the shapes")
	fs.IntVar(&f.probes, "probes", 0, "estimate ||J||^2 with this many random-sign products when the model has more outputs (0: exact)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed for random, probes and anything else random")
	fs.DurationVar(&f.exactBudget, "exact-budget", 10*time.Minute, "largest estimated run time the exact method accepts")
	fs.BoolVar(&f.force, "force", false, "run exact whatever its estimated time, and accept degenerate calibration data (fewer than 2 samples, all samples equal, every importance zero)")
	registerECPlusFlags(fs, &f.ecplus)
}

// job is a model with its calibration data and statistics, computed once
// and reused for every method and sparsity.
type job struct {
	e        *env
	af       *analysisFlags
	ld       *loaded
	src      *calib.Source // analysis samples
	hold     *calib.Source // held-out samples, or nil
	task     analysis.Task
	labels   *analysis.Labels // of src
	hlabels  *analysis.Labels // of hold
	stats    *analysis.Stats
	scores   map[string]*analysis.Scores
	prep     *ecplus.Prep // what the statistics pass kept for ec+, or nil
	statTime time.Duration
	// oneShot: the job scores one method once and writes one model (the
	// prune command), so scoring may consume the statistics' per-weight
	// sums (ec computes in their storage) and selection the scores (the
	// plan's weights take their storage), unless keepScores. On a large
	// model that halves the peak memory. sweep leaves it false.
	oneShot    bool
	keepScores bool // --scores: the scores are written after the model
}

func (e *env) newJob(modelPath string, af *analysisFlags, needGrad, withECPlus bool) (*job, error) {
	if len(af.calib) == 0 {
		return nil, usagef("--calib is required")
	}
	switch af.objective {
	case "output", "loss":
	default:
		return nil, usagef("--objective %q: want output or loss", af.objective)
	}
	switch af.ad {
	case analysis.ADAuto, analysis.ADForward, analysis.ADReverse:
	default:
		return nil, usagef("--ad %q: want auto, forward or reverse", af.ad)
	}
	switch af.task {
	case "", "classification", "regression":
	default:
		return nil, usagef("--task %q: want classification or regression", af.task)
	}
	if !(af.holdout >= 0 && af.holdout < 1) { // NaN too
		return nil, usagef("--holdout %g is outside [0, 1)", af.holdout)
	}
	if af.probes < 0 {
		return nil, usagef("--probes %d: want 0 (exact) or a positive number of probes", af.probes)
	}
	if af.batch < 0 || af.limit < 0 {
		return nil, usagef("--batch and --limit must not be negative")
	}
	if af.exactBudget < 0 {
		return nil, usagef("--exact-budget %s must not be negative", af.exactBudget)
	}
	if af.objective == "loss" && af.labels == "" {
		return nil, usagef("--objective loss needs --labels")
	}
	ld, err := e.loadModel(modelPath, true)
	if err != nil {
		return nil, err
	}
	large := tuneGC(ld.net)
	src, err := e.openData(ld.net, af.calib, af.batch, af.limit)
	if err != nil {
		return nil, err
	}
	j := &job{e: e, af: af, ld: ld, src: src, scores: map[string]*analysis.Scores{}}
	if af.holdout > 0 {
		j.src, j.hold = src.Split(af.holdout, af.seed)
		if j.src.N() == 0 || j.hold.N() == 0 {
			return nil, usagef("--holdout %g leaves %d samples for the analysis and %d held out", af.holdout, j.src.N(), j.hold.N())
		}
	}
	// Degenerate data makes every importance zero: the run would "succeed"
	// with an arbitrary pruning.
	if !af.force {
		if n := j.src.N(); n < 2 {
			return nil, &calib.DataError{File: af.calib[0], Msg: fmt.Sprintf("%d calibration sample left for the analysis (after --limit and --holdout): the statistics need at least 2, better hundreds (--force runs anyway)", n)}
		}
		if !src.Varies() {
			return nil, &calib.DataError{File: af.calib[0], Msg: "every calibration sample is the same (each feature constant): every importance would be zero and the pruning arbitrary; give real inputs (--force runs anyway)"}
		}
	}
	if af.labels != "" {
		width, err := outputWidth(ld.net, j.src)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", modelPath, err)
		}
		raw, err := j.src.LoadLabels(af.labels)
		if err != nil {
			return nil, err
		}
		if j.labels, j.task, err = prepareLabels(af.labels, raw, af.task, width); err != nil {
			return nil, err
		}
		if j.hold != nil {
			if raw, err = j.hold.LoadLabels(af.labels); err != nil {
				return nil, err
			}
			if j.hlabels, _, err = prepareLabels(af.labels, raw, string(j.task), width); err != nil {
				return nil, err
			}
		}
	} else {
		j.task = guessTask(af.task, nil)
	}
	if af.noStats {
		return j, nil
	}
	var observe func(*analysis.Stats, analysis.Batch, *analysis.Trace, [][]float64) error
	if withECPlus {
		// ec+ keeps per-sample values of this pass instead of its own.
		j.prep = ecplus.NewPrep(ld.net, sourceData{Src: j.src}, j.ecplusTask())
		observe = j.prep.Observe
	}
	t := time.Now()
	p := e.newProgress("analysis", j.src.N())
	j.stats, err = analysis.Collect(ld.net, sourceData{Src: j.src}, analysis.StatsOptions{
		Objective: analysis.Objective(af.objective), Task: j.task, Labels: j.labels,
		AD: af.ad, Probes: af.probes, Seed: af.seed, Batch: af.batch,
		Grad:     needGrad && j.labels != nil,
		Log:      e.logf,
		Progress: p.set,
		Observe:  observe,
	})
	p.finish()
	if err != nil {
		return nil, fmt.Errorf("%s: analysis: %w", modelPath, err)
	}
	j.statTime = time.Since(t)
	if large {
		// The last batch's buffers are garbage now: collect them before
		// scoring and writing allocate (a few milliseconds; the live heap
		// is a few large slices the collector does not scan).
		runtime.GC()
	}
	e.logf("statistics of %d layers over %d samples computed once in %s (%d batches, %s)", len(j.stats.Layers), j.stats.N, j.statTime.Round(time.Millisecond), j.stats.Passes, j.stats.Mode)
	return j, nil
}

// regression reports whether the outputs are known not to be classes:
// regression labels or --task regression. Without labels the task is only
// a default, and an argmax agreement may still mean something.
func (j *job) regression() bool {
	return j.task == analysis.TaskRegression && (j.labels != nil || j.af.task == "regression")
}

// methodScores computes (once) a statistics-based or exact criterion.
func (j *job) methodScores(method string) (*analysis.Scores, error) {
	if sc, ok := j.scores[method]; ok {
		return sc, nil
	}
	var sc *analysis.Scores
	var err error
	switch method {
	case "exact":
		budget := j.af.exactBudget
		if j.af.force {
			budget = 0
		}
		p := j.e.newProgress("exact", 1)
		sc, err = analysis.Exact(j.ld.net, sourceData{Src: j.src}, j.stats, analysis.ExactOptions{Batch: 1 << 30, Budget: budget, Progress: p.set, Log: j.e.logf})
		p.finish()
	default:
		var c analysis.Criterion
		if c, err = analysis.CriterionByName(method); err != nil {
			return nil, usagef("--method: %v", err)
		}
		if c.NeedsLabels() && j.labels == nil {
			return nil, usagef("method %s needs labels (--labels)", method)
		}
		if j.oneShot {
			sc, err = analysis.ScoreConsuming(c, j.stats, j.af.seed)
		} else {
			sc, err = c.Score(j.stats, j.af.seed)
		}
	}
	if err != nil {
		return nil, err
	}
	if !j.af.force && method != "random" && allZero(sc) {
		return nil, &calib.DataError{File: j.af.calib[0], Msg: "every weight's importance (" + method + ") is zero on this calibration data: the pruning would be arbitrary; check the data (--force runs anyway)"}
	}
	if j.oneShot {
		j.releaseSums()
	}
	j.scores[method] = sc
	return sc, nil
}

func allZero(sc *analysis.Scores) bool {
	for _, ls := range sc.Layers {
		for _, v := range ls.Score {
			if v != 0 {
				return false
			}
		}
	}
	return true
}

// releaseSums drops the statistics' per-weight sums once a one-shot job
// has its scores: nothing reads them afterwards (the report uses only N
// and Mode), and they are 16-24 bytes per weight.
func (j *job) releaseSums() {
	for _, ls := range j.stats.Layers {
		ls.S1, ls.S2, ls.GradW = nil, nil, nil
	}
}

// plan prunes with a method at the given options.
func (j *job) plan(method string, opt prune.Options) (*prune.Plan, error) {
	if err := opt.Validate(j.ld.net); err != nil {
		return nil, err
	}
	if method == "ec+" {
		if opt.NM != nil {
			return nil, usagef("--nm is not supported with ec+")
		}
		ecs, err := j.methodScores("ec")
		if err != nil {
			return nil, err
		}
		eo := j.af.ecplus
		eo.Prep = j.prep
		eo.Seed = j.af.seed // its own probes, if any, are the statistics'
		if j.oneShot && !j.keepScores {
			// ec+ needs the ec scores only for its budgets: once it has
			// them, nothing holds them (4 F on a large model).
			delete(j.scores, "ec")
		}
		var finish func()
		eo.Progress, finish = j.e.ecplusProgress()
		defer finish()
		return ecplus.Prune(j.ld.net, sourceData{Src: j.src}, j.stats, ecs, opt, eo, j.ecplusTask(), j.e.debugf)
	}
	if method == "sparsegpt" || method == "sparsegpt+bias" {
		if opt.NM != nil {
			return nil, usagef("--nm is not supported with %s", method)
		}
		ecs, err := j.methodScores("ec")
		if err != nil {
			return nil, err
		}
		budget, err := prune.Select(j.ld.net, ecs, opt)
		if err != nil {
			return nil, err
		}
		so := prune.DefaultSparseGPT
		so.Bias = method == "sparsegpt+bias"
		return prune.SparseGPT(j.ld.net, sourceData{Src: j.src}, j.stats, budget, so, j.e.debugf)
	}
	sc, err := j.methodScores(method)
	if err != nil {
		return nil, err
	}
	opt.Compensate = opt.Compensate && analysis.Compensates(method)
	if j.oneShot && !j.keepScores {
		// The scores are spent: the plan's weights take their storage.
		delete(j.scores, method)
		return prune.SelectConsuming(j.ld.net, sc, opt)
	}
	return prune.Select(j.ld.net, sc, opt)
}

// ecplusTask is the task ec+ matches: ecplus.TaskAuto (recognised from the
// model) when neither labels nor --task name one.
func (j *job) ecplusTask() analysis.Task {
	if j.labels == nil && j.af.task == "" {
		return ecplus.TaskAuto
	}
	return j.task
}

// metadata is the JSON stored in the output model's metadata_props.
func (j *job) metadata(method string, opt prune.Options) string {
	m := map[string]any{
		"version": version, "method": method, "sparsity": opt.Sparsity, "scope": string(opt.Scope),
		"objective": j.af.objective, "calibration_samples": j.stats.N, "seed": j.af.seed,
	}
	if opt.NM != nil {
		m["nm"] = fmt.Sprintf("%d:%d", opt.NM.N, opt.NM.M)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// write applies a plan to the model file's protobuf.
func (j *job) write(plan *prune.Plan, format export.Format, addBias bool, meta string) (*onnxio.Model, []export.TensorResult, error) {
	ups := make([]export.Update, 0, len(plan.Layers))
	for _, lp := range plan.Layers {
		u := export.Update{Layer: lp.Layer, W: lp.W}
		if lp.BiasShift != nil {
			u.B = lp.B
		}
		if u.B != nil && lp.Layer.B == nil && !addBias {
			return nil, nil, usagef("layer %s has no bias and --add-bias=false: cannot compensate (use a non-compensating method or allow the bias)", lp.Layer.Name)
		}
		ups = append(ups, u)
	}
	return export.Apply(j.ld.model, ups, export.Options{Format: format, AddBias: addBias, Metadata: meta})
}
