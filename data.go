package ecprune

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
)

// Data names the files of a data set: inputs (.npy with samples on the
// first axis, .npz keyed by graph input name, or TensorProto .pb; one per
// graph input or one .npz) and, optionally, labels (class indices or
// float targets of the same samples).
type Data struct {
	Inputs []string
	Labels string
}

// openInputs opens inputs for a network.
func openInputs(net *onnxio.Network, paths []string, batch, limit int, ev Events) (*calib.Source, error) {
	specs := make([]calib.InputSpec, len(net.Inputs))
	for i, in := range net.Inputs {
		specs[i] = calib.InputSpec{Name: in.Name, Shape: in.Shape}
	}
	return calib.Open(paths, specs, calib.Options{Batch: batch, Limit: limit, Warn: func(s string) { ev.Log("warning: " + s) }})
}

// guessTask picks the task from the labels when none is given: integer
// labels mean classification.
func guessTask(task Task, l *calib.Labels) Task {
	switch task {
	case analysis.TaskClassification, analysis.TaskRegression:
		return task
	}
	if l != nil && l.Class != nil {
		return analysis.TaskClassification
	}
	return analysis.TaskRegression
}

// outputWidth runs the network on the first sample and returns the number
// of values of its first output per sample, so that labels can be checked
// against it before any long pass.
func outputWidth(net *onnxio.Network, src *calib.Source) (int, error) {
	width := 0
	_, err := analysis.Evaluate(net, nil, calib.Data{Src: src.Head(1)}, nil, analysis.TaskRegression, 1,
		func(_ int, outs []*analysis.Tensor) error {
			width = 1
			for _, d := range outs[0].Shape[1:] {
				width *= d
			}
			return nil
		})
	return width, err
}

// prepareLabels checks labels against the task and the model's output
// width and converts them; task "" guesses it from the labels. Every
// problem is found here, before the analysis, with a hint.
func (a *Analysis) prepareLabels(path string, l *calib.Labels, task Task, width int) (*analysis.Labels, Task, error) {
	bad := func(format string, args ...any) error {
		return &calib.DataError{File: path, Msg: fmt.Sprintf(format, args...)}
	}
	per := 1
	for _, d := range l.TargetShape {
		per *= d
	}
	whole := true // every value a whole number
	for _, v := range l.Target {
		if v != math.Trunc(v) {
			whole = false
			break
		}
	}
	oneHot := per > 1 && per == width && whole && isOneHot(l.Target, per)
	given := task
	task = guessTask(given, l)
	tn := a.name("Task")
	switch {
	case given == "" && oneHot:
		return nil, "", bad("labels are one-hot vectors of the model's %d classes: give class indices instead (numpy: y.argmax(axis=1)), %s classification to read them as such, or %s regression to fit them as targets", width, tn, tn)
	case task == analysis.TaskClassification && oneHot:
		classes := make([]int, l.N)
		for i := range classes {
			for k := range per {
				if l.Target[i*per+k] == 1 {
					classes[i] = k
				}
			}
		}
		l = &calib.Labels{Class: classes, N: l.N, TargetShape: nil}
	case task == analysis.TaskClassification && l.Class == nil:
		if per != 1 {
			return nil, "", bad("classification needs one class index per sample, these labels have %d values per sample", per)
		}
		if !whole {
			return nil, "", bad("classification needs whole class indices, these labels hold fractions (targets for %s regression?)", tn)
		}
		classes := make([]int, l.N)
		for i, v := range l.Target {
			if v < 0 || v > math.MaxInt32 {
				return nil, "", bad("class index %g of sample %d is negative or too large", v, i)
			}
			classes[i] = int(v)
		}
		l = &calib.Labels{Class: classes, N: l.N}
	}
	if task == analysis.TaskClassification {
		if width == 1 {
			return nil, "", bad("class labels, but the model has a single output: for integer targets use %s regression", tn)
		}
		for i, c := range l.Class {
			if c >= width {
				return nil, "", bad("class %d of sample %d is outside the model's %d outputs (classes 0 to %d)", c, i, width, width-1)
			}
		}
		return &analysis.Labels{Class: l.Class, Width: 1}, task, nil
	}
	if per != width {
		hint := ""
		if per == 1 && whole && width > 1 {
			hint = fmt.Sprintf(": class indices stored as floats? use %s classification or save them as integers", tn)
		}
		return nil, "", bad("regression targets have %d values per sample, the model's output has %d%s", per, width, hint)
	}
	return &analysis.Labels{Target: l.Target, Width: per}, task, nil
}

func isOneHot(v []float64, per int) bool {
	for i := 0; i < len(v); i += per {
		ones := 0
		for _, x := range v[i : i+per] {
			switch x {
			case 1:
				ones++
			case 0:
			default:
				return false
			}
		}
		if ones != 1 {
			return false
		}
	}
	return true
}
