package main

import (
	"fmt"

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
type sourceData struct{ src *calib.Source }

func (d sourceData) Len() int { return d.src.N() }

func (d sourceData) Each(batch int, f func(analysis.Batch) error) error {
	for b, err := range d.src.WithBatch(batch).Batches() {
		if err != nil {
			return err
		}
		ins := make([]*analysis.Tensor, len(b.Inputs))
		for i := range b.Inputs {
			ins[i] = analysis.NewTensor(b.Shapes[i], b.Inputs[i])
		}
		if err := f(analysis.Batch{Start: b.Start, Inputs: ins}); err != nil {
			return err
		}
	}
	return nil
}

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
	s, err := export.Sizes(path)
	if err != nil {
		return sizeInfo{}, err
	}
	params, nnz, _ := export.Counts(net)
	return sizeInfo{Bytes: s.Disk, GzipBytes: s.Gzip, Params: params, NonZeros: nnz}, nil
}
