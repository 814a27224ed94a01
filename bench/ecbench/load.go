package main

import (
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
)

// loadWorkload loads a model and opens its calibration data the way
// `ecprune prune` does (the GC tuned to the model's size).
func loadWorkload(model, data string, batch, limit int) (*onnxio.Model, *onnxio.Network, *calib.Source, error) {
	m, err := onnxio.Load(model)
	if err != nil {
		return nil, nil, nil, err
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	if err := net.Err(model); err != nil {
		return nil, nil, nil, err
	}
	tuneGC(net)
	specs := make([]calib.InputSpec, len(net.Inputs))
	for i, in := range net.Inputs {
		specs[i] = calib.InputSpec{Name: in.Name, Shape: in.Shape}
	}
	src, err := calib.Open([]string{data}, specs, calib.Options{Batch: batch, Limit: limit})
	if err != nil {
		return nil, nil, nil, err
	}
	return m, net, src, nil
}
