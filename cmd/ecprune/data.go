package main

import (
	"fmt"

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
	for _, w := range m.Warnings {
		e.logf("warning: %s", w)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, err
	}
	if needEval {
		if err := net.Err(path); err != nil {
			return nil, err
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

// loadLabels reads labels for a source and converts them for the task.
func loadLabels(path string, src *calib.Source, task analysis.Task) (*analysis.Labels, error) {
	l, err := src.LoadLabels(path)
	if err != nil {
		return nil, err
	}
	return convertLabels(path, l, task)
}

func convertLabels(path string, l *calib.Labels, task analysis.Task) (*analysis.Labels, error) {
	switch task {
	case analysis.TaskClassification:
		if l.Class == nil {
			return nil, &calib.DataError{File: path, Msg: "classification needs integer class labels, this file holds float targets (use --task regression?)"}
		}
		return &analysis.Labels{Class: l.Class, Width: 1}, nil
	case analysis.TaskRegression:
		w := 1
		for _, d := range l.TargetShape {
			w *= d
		}
		return &analysis.Labels{Target: l.Target, Width: w}, nil
	}
	return nil, fmt.Errorf("unknown task %q", task)
}

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
		task = guessTask(f.task, raw)
		var labels *analysis.Labels
		if labels, err = convertLabels(f.labels, raw, task); err == nil {
			return src, labels, task, nil
		}
	}
	src.Close()
	return nil, nil, "", err
}
