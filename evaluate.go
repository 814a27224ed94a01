package ecprune

import (
	"context"
	"fmt"
	"io"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
)

// EvalOptions say how Evaluate and Compare read their data.
type EvalOptions struct {
	// Task is the loss the labels imply; empty: from the labels' type.
	Task Task
	// Batch is the samples per batch (0: 256); Limit uses at most this
	// many samples (0: all).
	Batch, Limit int
	// KeepOutputs keeps the model's first output of every sample
	// (Evaluation.WriteOutputs).
	KeepOutputs bool
	// Events receives warnings about the data.
	Events Events
	// OptionNames: see Analysis.OptionNames.
	OptionNames func(option string) string
}

func (o EvalOptions) analysis() Analysis {
	return Analysis{Task: o.Task, Batch: o.Batch, Limit: o.Limit, Events: o.Events, OptionNames: o.OptionNames}
}

// Validate checks the options on their own.
func (o EvalOptions) Validate() error {
	a := o.analysis()
	switch o.Task {
	case "", analysis.TaskClassification, analysis.TaskRegression:
		return nil
	}
	return a.optErr("Task", "%s %q: want classification or regression", a.name("Task"), o.Task)
}

// Evaluation is a model measured on data.
type Evaluation struct {
	// Task is the task of the labels, empty without labels.
	Task Task
	// Quality is the model's loss and accuracy on the labels and, against
	// a reference model, its output error.
	Quality *Quality
	// Reference is the reference model's own loss and accuracy.
	Reference *Quality

	outputs []float64
	shape   []int
	float32 bool
}

// openEval opens a data set for m with its labels, converted for the task
// (guessed from the labels when not given).
func (o EvalOptions) open(m *Model, d Data) (*calib.Source, *analysis.Labels, Task, error) {
	a := o.analysis()
	ev := events(o.Events)
	batch := o.Batch
	src, err := openInputs(m.net, d.Inputs, batch, o.Limit, ev)
	if err != nil {
		return nil, nil, "", err
	}
	task := guessTask(o.Task, nil)
	if d.Labels == "" {
		return src, nil, task, nil
	}
	raw, err := src.LoadLabels(d.Labels)
	if err == nil {
		var width int
		if width, err = outputWidth(m.net, src); err == nil {
			var labels *analysis.Labels
			if labels, task, err = a.prepareLabels(d.Labels, raw, o.Task, width); err == nil {
				return src, labels, task, nil
			}
		}
	}
	src.Close()
	return nil, nil, "", err
}

// Evaluate runs m on the data: its loss and accuracy with labels, and its
// output error against ref (if not nil), whose own loss and accuracy are
// measured too.
func Evaluate(ctx context.Context, m, ref *Model, d Data, o EvalOptions) (*Evaluation, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	a := o.analysis()
	if len(d.Inputs) == 0 {
		return nil, a.optErr("Inputs", "%s is required", a.name("Inputs"))
	}
	if ref != nil && (len(ref.net.Inputs) != len(m.net.Inputs) || len(ref.net.Outputs) != len(m.net.Outputs)) {
		return nil, &onnxio.BadInputError{File: ref.path, Msg: "has other inputs or outputs than " + m.path}
	}
	src, labels, task, err := o.open(m, d)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	r := &Evaluation{}
	if labels != nil {
		r.Task = task
	}
	var collect func(int, []*analysis.Tensor) error
	if o.KeepOutputs {
		collect = func(_ int, outs []*analysis.Tensor) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			r.outputs = append(r.outputs, outs[0].Data...)
			if r.shape == nil {
				r.shape = append([]int{0}, outs[0].Shape[1:]...)
			}
			r.shape[0] += outs[0].Shape[0]
			return nil
		}
		r.float32 = true
		for _, l := range m.net.Layers {
			if l.WeightType == onnxio.Double {
				r.float32 = false
			}
		}
	}
	var refNet *onnxio.Network
	if ref != nil {
		refNet = ref.net
	}
	q, err := analysis.Evaluate(m.net, refNet, calib.Data{Src: src}, labels, task, o.Batch, collect)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	if labels != nil && task == analysis.TaskRegression {
		q.ArgmaxSame = nil // no classes: the agreement means nothing
	}
	r.Quality = q
	if refNet != nil && labels != nil {
		if r.Reference, err = analysis.Evaluate(refNet, nil, calib.Data{Src: src}, labels, task, o.Batch, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", ref.path, err)
		}
	}
	return r, nil
}

// WriteOutputs writes the kept outputs (EvalOptions.KeepOutputs) as .npy:
// float32, or float64 for a float64 model.
func (r *Evaluation) WriteOutputs(w io.Writer) error {
	return calib.WriteNpy(w, r.outputs, r.shape, r.float32)
}

// Compare measures the pruned model after against the original before on
// the data: before's own loss and accuracy (with labels), and after's
// against before.
func Compare(ctx context.Context, before, after *Model, d Data, o EvalOptions) (*QualityPair, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	src, labels, task, err := o.open(before, d)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var q QualityPair
	if labels != nil {
		if q.Original, err = analysis.Evaluate(before.net, nil, calib.Data{Src: src}, labels, task, o.Batch, nil); err != nil {
			return nil, err
		}
	} else {
		q.Original = &analysis.Quality{N: src.N()}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if q.Pruned, err = analysis.Evaluate(after.net, before.net, calib.Data{Src: src}, labels, task, o.Batch, nil); err != nil {
		return nil, err
	}
	return &q, nil
}

// BLAS names the matrix product implementation and its kernel, for
// version reports.
func BLAS() (name, kernel string) { return analysis.BLASName, analysis.BLASKernel() }
