package ecprune

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// The option types of the packages below, under this package's names, so
// that a caller needs only this package.
type (
	Objective     = analysis.Objective
	Task          = analysis.Task
	Scope         = prune.Scope
	NM            = prune.NM
	ECPlusOptions = ecplus.Options
	Format        = export.Format
	Quality       = analysis.Quality
)

const (
	ObjOutput          = analysis.ObjOutput
	ObjLoss            = analysis.ObjLoss
	TaskClassification = analysis.TaskClassification
	TaskRegression     = analysis.TaskRegression
	Global             = prune.Global
	Layer              = prune.Layer
	ADAuto             = analysis.ADAuto
	ADForward          = analysis.ADForward
	ADReverse          = analysis.ADReverse
)

// Granularity is what pruning removes.
type Granularity string

const (
	// Weight removes single weights (unstructured sparsity); the default.
	Weight Granularity = "weight"
	// Neuron removes hidden units of dense chains: a smaller dense model.
	Neuron Granularity = "neuron"
)

// DefaultECPlusOptions are ec+'s recommended knobs.
func DefaultECPlusOptions() ECPlusOptions { return ecplus.DefaultOptions() }

// ParseFormat reads a storage format name (auto, constant,
// sparse-initializer, dense).
func ParseFormat(s string) (Format, error) { return export.ParseFormat(s) }

// Analysis are the options of the statistics pass, shared by Prune and
// Sweep. Their zero value is the recommended setting.
type Analysis struct {
	// Objective is what a removal is measured on: ObjOutput (the default;
	// no labels needed) or ObjLoss (needs labels).
	Objective Objective
	// Task is the loss the labels imply; empty: classification for
	// integer labels, else regression.
	Task Task
	// AD is how derivatives are taken: ADAuto (the default: the cheaper of
	// forward and reverse for the shapes), ADForward or ADReverse.
	AD string
	// Probes > 0 estimates ||J||^2 with this many random-sign products
	// when the model has more outputs.
	Probes int
	// Batch is the samples per batch (bounds memory; 0: 256).
	Batch int
	// Limit uses at most this many samples (0: all).
	Limit int
	// Holdout keeps this fraction of the samples (the last ones, in
	// [0, 1)) out of the analysis and measures the pruned model on them.
	Holdout float64
	// Seed drives everything random (probes, the random method, ec+).
	Seed uint64
	// ExactBudget is the largest estimated run time the exact method
	// accepts (0: 10 minutes).
	ExactBudget time.Duration
	// Force runs exact whatever its estimated time, and accepts
	// degenerate calibration data (fewer than 2 samples, all samples
	// equal, every importance zero).
	Force bool
	// ECPlus tunes ec+; nil is its recommended setting
	// (DefaultECPlusOptions).
	ECPlus *ECPlusOptions
	// TuneGC lets a run on a large model lower the garbage collector's
	// growth (debug.SetGCPercent) unless GOGC is set: the command does; a
	// library caller may prefer to keep its own setting.
	TuneGC bool
	// Events receives progress and log lines; nil is silent.
	Events Events
	// OptionNames, if set, says how messages name an option (the field
	// name, e.g. "Sparsity", or "Labels" and "Inputs" for Data): the
	// command gives its flag names. Nil or "": the field name.
	OptionNames func(option string) string
}

// Options say how Prune prunes. Their zero value is the recommended
// setting (ec+ with its defaults, global ranking, auto storage) at
// sparsity 0: set Sparsity.
type Options struct {
	Analysis
	// Method names a method of the registry (Methods); empty: the
	// recommended one, ec+.
	Method string
	// Granularity is what is removed: Weight (the default) or Neuron.
	Granularity Granularity
	// Sparsity is the fraction of the prunable weights (of the removable
	// units, for Neuron) removed, in [0, 1).
	Sparsity float64
	// Scope ranks globally (the default) or per layer.
	Scope Scope
	// NM, when set, keeps N of every M consecutive weights of a row
	// instead of Sparsity.
	NM *NM
	// LayerSparsity fixes named layers' sparsity (weight initializer or
	// node names); they are ranked on their own.
	LayerSparsity map[string]float64
	// Skip leaves layers dense (weight initializer or node names).
	Skip []string
	// Format is how pruned weights are stored (empty: export.Auto).
	Format Format
	// NoNewBias forbids giving a bias-free layer a bias; compensating
	// methods then fail on such a layer.
	NoNewBias bool
	// NoReconstruct, with Neuron and ec+, replaces removed units by their
	// means instead of predicting them from the kept ones.
	NoReconstruct bool
	// CostWeighted, with Neuron, ranks hidden units by score per
	// multiply-add their removal saves instead of per unit: for the same
	// count, the removals save more work, at some loss.
	CostWeighted bool
	// ExternalData > 0 stores tensors of at least this many bytes in
	// OUTPUT.data when saved (0: keep the input's layout).
	ExternalData int64
	// KeepScores keeps the method's per-weight scores for
	// Result.WriteScores (a one-shot run otherwise spends them).
	KeepScores bool
}

// OptionError is an option value that cannot work. Option names the
// field (of Options, "Inputs"/"Labels" of Data, "Rounds" of ECPlus...);
// the message names options as Analysis.OptionNames says.
type OptionError struct {
	Option string
	Msg    string
}

func (e *OptionError) Error() string { return e.Msg }

// name is how messages name an option.
func (a *Analysis) name(option string) string {
	if a.OptionNames != nil {
		if n := a.OptionNames(option); n != "" {
			return n
		}
	}
	return option
}

// optErr is an *OptionError about option; the message names options
// through a.name.
func (a *Analysis) optErr(option, format string, args ...any) error {
	return &OptionError{Option: option, Msg: fmt.Sprintf(format, args...)}
}

// fromPrune converts the option errors of package prune, which name
// options by field, into this package's, named as OptionNames says.
func (a *Analysis) fromPrune(err error) error {
	var po *prune.OptionError
	if !errors.As(err, &po) {
		return err
	}
	if po.Field == "" {
		return &OptionError{Msg: po.Msg}
	}
	return &OptionError{Option: po.Field, Msg: a.name(po.Field) + " " + po.Msg}
}

// IsBadInput reports whether err is the user's to fix (a bad file, bad
// data, a bad option value, a refused budget) rather than a failure of the
// tool: the command exits 2 for these.
func IsBadInput(err error) bool {
	var (
		b  *onnxio.BadInputError
		d  *calib.DataError
		o  *OptionError
		po *prune.OptionError
		be *analysis.BudgetError
	)
	return errors.As(err, &b) || errors.As(err, &d) || errors.As(err, &o) || errors.As(err, &po) || errors.As(err, &be)
}

// withDefaults fills in the recommended values of unset fields.
func (a Analysis) withDefaults() Analysis {
	if a.Objective == "" {
		a.Objective = analysis.ObjOutput
	}
	if a.AD == "" {
		a.AD = analysis.ADAuto
	}
	if a.Batch == 0 {
		a.Batch = 256
	}
	if a.ExactBudget == 0 {
		a.ExactBudget = 10 * time.Minute
	}
	if a.ECPlus == nil {
		eo := ecplus.DefaultOptions()
		a.ECPlus = &eo
	}
	a.Events = events(a.Events)
	return a
}

// Validate checks the analysis options on their own.
func (a Analysis) Validate() error {
	switch a.Objective {
	case "", analysis.ObjOutput, analysis.ObjLoss:
	default:
		return a.optErr("Objective", "%s %q: want output or loss", a.name("Objective"), a.Objective)
	}
	switch a.AD {
	case "", analysis.ADAuto, analysis.ADForward, analysis.ADReverse:
	default:
		return a.optErr("AD", "%s %q: want auto, forward or reverse", a.name("AD"), a.AD)
	}
	switch a.Task {
	case "", analysis.TaskClassification, analysis.TaskRegression:
	default:
		return a.optErr("Task", "%s %q: want classification or regression", a.name("Task"), a.Task)
	}
	if !(a.Holdout >= 0 && a.Holdout < 1) { // NaN too
		return a.optErr("Holdout", "%s %g is outside [0, 1)", a.name("Holdout"), a.Holdout)
	}
	if a.Probes < 0 {
		return a.optErr("Probes", "%s %d: want 0 (exact) or a positive number of probes", a.name("Probes"), a.Probes)
	}
	if a.Batch < 0 || a.Limit < 0 {
		return a.optErr("Batch", "%s and %s must not be negative", a.name("Batch"), a.name("Limit"))
	}
	if a.ExactBudget < 0 {
		return a.optErr("ExactBudget", "%s %s must not be negative", a.name("ExactBudget"), a.ExactBudget)
	}
	return nil
}

// validateData checks the analysis options against the data given.
func (a Analysis) validateData(d Data) error {
	if len(d.Inputs) == 0 {
		return a.optErr("Inputs", "%s is required", a.name("Inputs"))
	}
	if a.Objective == analysis.ObjLoss && d.Labels == "" {
		return a.optErr("Objective", "%s loss needs %s", a.name("Objective"), a.name("Labels"))
	}
	return nil
}

// checkFraction refuses a sparsity outside [0, 1), with a hint when it
// looks like a percentage.
func (a Analysis) checkFraction(option, what string, s float64) error {
	if s >= 0 && s < 1 {
		return nil
	}
	if s >= 1 && s < 100 {
		return a.optErr(option, "%s %g is a fraction of the weights, in [0, 1): for %g%% write %g", what, s, s, s/100)
	}
	return a.optErr(option, "%s %g is outside [0, 1)", what, s)
}

// Validate checks the options on their own, before any work: the method
// and what it supports, the sparsities, the analysis options. Problems
// are *OptionError values.
func (o Options) Validate() error {
	if o.ExternalData < 0 {
		return o.optErr("ExternalData", "%s %d: want a size in bytes, or 0 to keep the input's layout", o.name("ExternalData"), o.ExternalData)
	}
	if o.Format != "" {
		if _, err := export.ParseFormat(string(o.Format)); err != nil {
			return o.optErr("Format", "%s: %v", o.name("Format"), err)
		}
	}
	m, err := o.method()
	if err != nil {
		return err
	}
	switch o.Granularity {
	case "", Weight:
	case Neuron:
		return o.validateNeuron(m)
	default:
		return o.optErr("Granularity", "%s %q: want weight or neuron", o.name("Granularity"), o.Granularity)
	}
	if o.NM != nil {
		if m.Needs.Sequential {
			// Sequential methods take EC's per-layer counts, not a
			// pattern.
			return o.optErr("NM", "%s is not supported with %s", o.name("NM"), m.Name)
		}
		if o.NM.N < 0 || o.NM.M <= 0 || o.NM.N > o.NM.M {
			return o.optErr("NM", "%s %d:%d: want 0 <= N <= M, M > 0", o.name("NM"), o.NM.N, o.NM.M)
		}
	} else if err := o.checkFraction("Sparsity", o.name("Sparsity"), o.Sparsity); err != nil {
		return err
	}
	for name, s := range o.LayerSparsity {
		if err := o.checkFraction("LayerSparsity", o.name("LayerSparsity")+" "+name, s); err != nil {
			return err
		}
	}
	if err := o.checkScope(); err != nil {
		return err
	}
	return o.Analysis.Validate()
}

func (o Options) checkScope() error {
	switch o.Scope {
	case "", prune.Global, prune.Layer:
		return nil
	}
	return o.optErr("Scope", "%s %q: want global or layer", o.name("Scope"), o.Scope)
}

// ValidateWith is Validate and the checks of the options against the
// data given: inputs present, labels where the method or the objective
// needs them.
func (o Options) ValidateWith(d Data) error {
	if err := o.Validate(); err != nil {
		return err
	}
	m, _ := o.method()
	if m.Needs.Labels && d.Labels == "" {
		return o.optErr("Method", "method %s needs labels (%s)", m.Name, o.name("Labels"))
	}
	return o.validateData(d)
}

// validateNeuron checks the options of Neuron granularity.
func (o Options) validateNeuron(m *Method) error {
	if m.units == nil {
		var names []string
		for _, u := range Methods() {
			if u.units != nil {
				names = append(names, u.Name)
			}
		}
		return o.optErr("Method", "%s %s is not available with %s neuron (want %s)", o.name("Method"), m.Name, o.name("Granularity"), strings.Join(names, ", "))
	}
	for _, c := range []struct {
		option string
		set    bool
	}{
		{"NM", o.NM != nil}, {"LayerSparsity", len(o.LayerSparsity) > 0}, {"KeepScores", o.KeepScores},
		{"Format", o.Format != "" && o.Format != export.Dense && o.Format != export.Auto},
	} {
		if c.set {
			return o.optErr(c.option, "%s does not apply to %s neuron (the output is a smaller dense model)", o.name(c.option), o.name("Granularity"))
		}
	}
	if o.AD == analysis.ADForward {
		return o.optErr("AD", "%s neuron takes derivatives in reverse mode only", o.name("Granularity"))
	}
	if err := o.checkFraction("Sparsity", o.name("Sparsity"), o.Sparsity); err != nil {
		return err
	}
	if err := o.checkScope(); err != nil {
		return err
	}
	return o.Analysis.Validate()
}

// method is the registry's method of o.Method.
func (o Options) method() (*Method, error) {
	m, err := MethodByName(o.Method)
	if err != nil {
		return nil, o.optErr("Method", "%s: %v", o.name("Method"), err)
	}
	return m, nil
}

// selection is the selection options of Options.
func (o Options) selection() prune.Options {
	scope := o.Scope
	if scope == "" {
		scope = prune.Global
	}
	p := prune.Options{Sparsity: o.Sparsity, Scope: scope, Skip: o.Skip, LayerSparsity: o.LayerSparsity, Compensate: true}
	if o.NM != nil {
		p.NM = o.NM
		p.Sparsity = 1 - float64(o.NM.N)/float64(o.NM.M)
	}
	return p
}

// CheckFormat refuses a storage format the model's file cannot hold (a
// sparse initializer in an IR version before 4), before any work.
func CheckFormat(m *onnxio.Model, f Format) error {
	if f == "" {
		f = export.Auto
	}
	return export.CheckFormat(m, f)
}

// SparseNote says how a model that already stores sparse tensors is
// treated, or is empty.
func SparseNote(m *onnxio.Model) string { return export.SparseNote(m) }
