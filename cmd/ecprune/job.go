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
	ecplus      prune.ECPlusOptions
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
	fs.BoolVar(&f.force, "force", false, "run exact whatever its estimated time")
	f.ecplus.RegisterFlags(fs)
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
	prep     *prune.ECPlusPrep // what the statistics pass kept for ec+, or nil
	statTime time.Duration
	// oneShot: the job scores one method once and writes one model (the
	// prune command), so scoring may consume the statistics' per-weight
	// sums (ec computes in their storage) and selection the scores (the
	// plan's weights take their storage), unless keepScores. On a large
	// model that halves the peak memory. sweep leaves it false.
	oneShot    bool
	keepScores bool // --scores: the scores are written after the model
}

func (e *env) newJob(modelPath string, af *analysisFlags, needGrad, ecplus bool) (*job, error) {
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
	if af.holdout < 0 || af.holdout >= 1 {
		return nil, usagef("--holdout %g is outside [0, 1)", af.holdout)
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
	if af.labels != "" {
		raw, err := j.src.LoadLabels(af.labels)
		if err != nil {
			return nil, err
		}
		j.task = guessTask(af.task, raw)
		if j.labels, err = convertLabels(af.labels, raw, j.task); err != nil {
			return nil, err
		}
		if j.hold != nil {
			if j.hlabels, err = loadLabels(af.labels, j.hold, j.task); err != nil {
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
	if ecplus {
		// ec+ keeps per-sample values of this pass instead of its own.
		j.prep = prune.NewECPlusPrep(ld.net, sourceData{Src: j.src}, j.task)
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
	if j.oneShot {
		j.releaseSums()
	}
	j.scores[method] = sc
	return sc, nil
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
		return prune.ECPlus(j.ld.net, sourceData{Src: j.src}, j.stats, ecs, opt, eo, j.task, j.e.debugf)
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
