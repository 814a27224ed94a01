package main

import (
	"fmt"
	"math"

	"github.com/spf13/pflag"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
)

// loaded is a model with its extracted network.
type loaded struct {
	path  string
	model *onnxio.Model
	net   *onnxio.Network
}

// loadModel loads and extracts a model, printing its warnings.
func (e *env) loadModel(path string, needEval bool) (*loaded, error) {
	m, err := onnxio.Load(path)
	if err != nil {
		return nil, err
	}
	if err := e.checkModelFiles(m); err != nil {
		return nil, err
	}
	if e.loadedCheck != nil {
		if err := e.loadedCheck(m); err != nil {
			return nil, err
		}
	}
	for _, w := range m.Warnings {
		e.logf("warning: %s", w)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, err
	}
	if err := checkFiniteWeights(path, net); err != nil {
		return nil, err
	}
	if needEval {
		if err := net.Err(path); err != nil {
			return nil, err
		}
		if err := analysis.Check(net); err != nil {
			return nil, &onnxio.BadInputError{File: path, Msg: err.Error()}
		}
	}
	return &loaded{path: path, model: m, net: net}, nil
}

// openData opens calibration or test inputs for a network.
func (e *env) openData(net *onnxio.Network, paths []string, batch, limit int) (*calib.Source, error) {
	specs := make([]calib.InputSpec, len(net.Inputs))
	for i, in := range net.Inputs {
		specs[i] = calib.InputSpec{Name: in.Name, Shape: in.Shape}
	}
	src, err := calib.Open(paths, specs, calib.Options{Batch: batch, Limit: limit, Warn: func(s string) { e.logf("warning: %s", s) }})
	if err != nil {
		return nil, err
	}
	return src, nil
}

// sourceData adapts a calib.Source to analysis.Data.
type sourceData = calib.Data

// guessTask picks the task from the labels when --task is not given:
// integer labels mean classification.
func guessTask(task string, l *calib.Labels) analysis.Task {
	switch task {
	case "classification":
		return analysis.TaskClassification
	case "regression":
		return analysis.TaskRegression
	}
	if l != nil && l.Class != nil {
		return analysis.TaskClassification
	}
	return analysis.TaskRegression
}

// modelSizes measures a saved model: bytes on disk, gzip bytes, dense
// weights and non-zeros of its dense layers.
func modelSizes(path string, net *onnxio.Network) (sizeInfo, error) {
	return measureAsync(path, nil).wait(net)
}

// pendingSize is export.Sizes running in the background.
type pendingSize struct {
	s    export.Size
	err  error
	done chan struct{}
}

func measureAsync(path string, st *onnxio.Stage) *pendingSize {
	p := &pendingSize{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.s, p.err = export.SizesStaged(path, st)
	}()
	return p
}

// wait returns the measured sizes with net's counts of weights.
func (p *pendingSize) wait(net *onnxio.Network) (sizeInfo, error) {
	<-p.done
	if p.err != nil {
		return sizeInfo{}, p.err
	}
	params, nnz, _ := export.Counts(net)
	return sizeInfo{Bytes: p.s.Disk, GzipBytes: p.s.Gzip, Params: params, NonZeros: nnz}, nil
}

// dataFlags are the evaluation-data flags of eval and report.
type dataFlags struct {
	data   []string
	labels string
	task   string
	batch  int
	limit  int
}

func (f *dataFlags) register(fs *pflag.FlagSet, dataHelp, labelsHelp string) {
	fs.StringSliceVar(&f.data, "data", nil, dataHelp)
	fs.StringVar(&f.labels, "labels", "", labelsHelp)
	fs.StringVar(&f.task, "task", "", "classification or regression; default: from the labels' type")
	fs.IntVar(&f.batch, "batch", 256, "samples per batch")
	fs.IntVar(&f.limit, "limit", 0, "use at most this many samples (0: all)")
}

func (f *dataFlags) check() error {
	switch f.task {
	case "", "classification", "regression":
		return nil
	}
	return usagef("--task %q: want classification or regression", f.task)
}

// open opens the data for net, and its labels if given, converted for the
// task (guessed from the labels when --task is not given).
func (f *dataFlags) open(e *env, net *onnxio.Network) (*calib.Source, *analysis.Labels, analysis.Task, error) {
	src, err := e.openData(net, f.data, f.batch, f.limit)
	if err != nil {
		return nil, nil, "", err
	}
	task := guessTask(f.task, nil)
	if f.labels == "" {
		return src, nil, task, nil
	}
	raw, err := src.LoadLabels(f.labels)
	if err == nil {
		var width int
		if width, err = outputWidth(net, src); err == nil {
			var labels *analysis.Labels
			if labels, task, err = prepareLabels(f.labels, raw, f.task, width); err == nil {
				return src, labels, task, nil
			}
		}
	}
	src.Close()
	return nil, nil, "", err
}

// checkFiniteWeights refuses a model whose dense layers hold NaN or Inf:
// every statistic and score would be NaN, found only after the analysis.
func checkFiniteWeights(path string, net *onnxio.Network) error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	for _, l := range net.Layers {
		n := l.Out * l.In
		if len(l.W32) < n && len(l.W) < n {
			continue // weights not decoded (a layer that is not evaluable)
		}
		for q := range n {
			if v := l.At(q); bad(v) {
				return &onnxio.BadInputError{File: path, Msg: fmt.Sprintf("weight %q holds %v at row %d, column %d (of %d x %d): the model is broken, nothing to prune", l.WeightInit, v, q/max(l.In, 1), q%max(l.In, 1), l.Out, l.In)}
			}
		}
		for i, v := range l.B {
			if bad(v) {
				name := l.BiasInit
				if name == "" {
					name = l.Name + " (bias)"
				}
				return &onnxio.BadInputError{File: path, Msg: fmt.Sprintf("bias %q holds %v at element %d: the model is broken, nothing to prune", name, v, i)}
			}
		}
	}
	return nil
}
