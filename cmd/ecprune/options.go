package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
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
	ecplus      ecprune.ECPlusOptions
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

// registerECPlusFlags adds ec+'s flags with the library's defaults.
func registerECPlusFlags(fs *pflag.FlagSet, o *ecprune.ECPlusOptions) {
	d := ecprune.DefaultECPlusOptions()
	fs.Float64Var(&o.Lambda, "ecplus-lambda", d.Lambda, "ec+: g_i(n) += lambda * mean_n g_i(n)")
	fs.Float64Var(&o.C, "ecplus-c", d.C, "ec+: weight of the credit for removals that cancel upstream residuals")
	fs.IntVar(&o.Rounds, "ecplus-rounds", d.Rounds, "ec+: greedy rounds per layer")
	fs.IntVar(&o.RefitSteps, "ecplus-refit", d.RefitSteps, "ec+: Levenberg-Marquardt steps of the final bias refit (0: none)")
	fs.StringVar(&o.Recon, "ecplus-recon", d.Recon, "ec+: least-squares reconstruction of the kept weights: auto (where it lowers the error on held-out calibration samples), on, off")
	fs.Float64Var(&o.ReconDamp, "ecplus-recon-damp", d.ReconDamp, "ec+: reconstruction damping, relative to the mean diagonal of the inputs' Gram matrix")
	fs.StringVar(&o.Budgets, "ecplus-budgets", d.Budgets, "ec+: per-layer counts of the global ranking: one-shot (EC's ranking) or refined (experimental: EC's ranking corrected by the error each layer's removals leave, measured on a quarter of the samples)")
}

// flagNames names the library's options by the flags that set them, so
// that its messages speak the command's language.
var flagNames = map[string]string{
	"Inputs": "--calib", "Labels": "--labels", "Task": "--task", "Objective": "--objective",
	"Batch": "--batch", "Limit": "--limit", "Holdout": "--holdout", "AD": "--ad", "Probes": "--probes",
	"ExactBudget": "--exact-budget", "Force": "--force",
	"Method": "--method", "Methods": "--methods", "Granularity": "--granularity", "Sparsity": "--sparsity",
	"Sparsities": "--sparsities", "Scope": "--scope", "NM": "--nm", "LayerSparsity": "--layer-sparsity",
	"Skip": "--skip", "Format": "--format", "NoNewBias": "--add-bias=false", "NoReconstruct": "--reconstruct=false", "CostWeighted": "--cost-weighted",
	"ExternalData": "--external-data", "KeepScores": "--scores",
	"Test": "--test", "Test.Labels": "--test-labels", "SaveDir": "--save-dir",
	"Lambda": "--ecplus-lambda", "C": "--ecplus-c", "Rounds": "--ecplus-rounds",
	"RefitSteps": "--ecplus-refit", "Recon": "--ecplus-recon", "ReconDamp": "--ecplus-recon-damp", "Budgets": "--ecplus-budgets",
}

func flagName(option string) string { return flagNames[option] }

// analysis is the library's analysis options of the flags.
func (f *analysisFlags) analysis(e *env) ecprune.Analysis {
	eo := f.ecplus
	return ecprune.Analysis{
		Objective: ecprune.Objective(f.objective), Task: ecprune.Task(f.task), AD: f.ad, Probes: f.probes,
		Batch: f.batch, Limit: f.limit, Holdout: f.holdout, Seed: f.seed, ExactBudget: f.exactBudget, Force: f.force,
		ECPlus: &eo, TuneGC: true, Events: &cliEvents{e: e}, OptionNames: flagName,
	}
}

// data is the calibration data of the flags.
func (f *analysisFlags) data() ecprune.Data {
	return ecprune.Data{Inputs: f.calib, Labels: f.labels}
}

// cliEvents shows the library's events on stderr: log lines, and a
// progress bar (or line) per phase.
type cliEvents struct {
	e      *env
	phases map[string]*progress
}

func (c *cliEvents) Log(msg string)   { c.e.logf("%s", msg) }
func (c *cliEvents) Debug(msg string) { c.e.debugf("%s", msg) }

func (c *cliEvents) Progress(phase string, done, total int) {
	p := c.phases[phase]
	if p == nil {
		if c.phases == nil {
			c.phases = map[string]*progress{}
		}
		p = c.e.newProgress(phase, total)
		c.phases[phase] = p
		if done == 0 {
			return
		}
	}
	p.set(done, total)
}

func (c *cliEvents) End(phase string) {
	c.phases[phase].finish()
	delete(c.phases, phase)
}

// loaded is a model with its file and network.
type loaded struct {
	path  string
	m     *ecprune.Model
	model *onnxio.Model
	net   *onnxio.Network
}

// loadModel loads a model, checking it against the run's files, and
// prints its warnings. needEval refuses a model whose outputs cannot be
// computed.
func (e *env) loadModel(path string, needEval bool) (*loaded, error) {
	m, err := ecprune.LoadWith(path, ecprune.LoadOptions{
		Check: func(m *onnxio.Model) error {
			if err := e.checkModelFiles(m); err != nil {
				return err
			}
			if e.loadedCheck != nil {
				return e.loadedCheck(m)
			}
			return nil
		},
		StructureOnly: !needEval,
		Events:        &cliEvents{e: e},
	})
	if err != nil {
		return nil, err
	}
	return &loaded{path: path, m: m, model: m.File(), net: m.Network()}, nil
}

// modelError is an error of a run: an option that does not fit the model
// (a layer it does not have) is bad input, not bad usage; a layer name
// comes with where to find the names.
func modelError(err error) error {
	var oe *ecprune.OptionError
	if errors.As(err, &oe) && (oe.Option == "Skip" || oe.Option == "LayerSparsity") {
		return fmt.Errorf("%w (see ecprune inspect)", err)
	}
	return err
}

// cliError turns the library's option errors found before any work into
// usage errors, whose messages name the flags.
func cliError(err error) error {
	if errors.As(err, new(*ecprune.OptionError)) {
		return &usageError{err.Error()}
	}
	return err
}
