package ecprune

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// Model is an ONNX model file, decoded, with its network: the dense
// layers and the ops around them.
type Model struct {
	path string
	file *onnxio.Model
	net  *onnxio.Network
}

// LoadOptions say how Load checks a model.
type LoadOptions struct {
	// Check, if set, runs on the decoded file before its network is
	// extracted (the command checks its outputs against the model's
	// external data files there).
	Check func(*onnxio.Model) error
	// StructureOnly accepts a model whose outputs cannot be computed (an
	// op without a kernel, a quantized layer): enough to inspect or
	// measure it, not to prune or evaluate it.
	StructureOnly bool
	// Events receives the file's warnings.
	Events Events
}

// Load reads a model that can be pruned and evaluated.
func Load(path string) (*Model, error) { return LoadWith(path, LoadOptions{}) }

// LoadWith reads a model. A model whose outputs cannot be computed is
// refused here, naming every such op, before any long work (unless
// StructureOnly), and so is one whose dense weights hold NaN or Inf.
func LoadWith(path string, opt LoadOptions) (*Model, error) {
	ev := events(opt.Events)
	m, err := onnxio.Load(path)
	if err != nil {
		return nil, err
	}
	if opt.Check != nil {
		if err := opt.Check(m); err != nil {
			return nil, err
		}
	}
	for _, w := range m.Warnings {
		ev.Log("warning: " + w)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, err
	}
	if err := checkFiniteWeights(path, net); err != nil {
		return nil, err
	}
	if !opt.StructureOnly {
		if err := net.Err(path); err != nil {
			return nil, err
		}
		if err := analysis.Check(net); err != nil {
			return nil, &onnxio.BadInputError{File: path, Msg: err.Error()}
		}
	}
	return &Model{path: path, file: m, net: net}, nil
}

// Path is the file the model was read from.
func (m *Model) Path() string { return m.path }

// File is the decoded file (the protobuf and its external data).
func (m *Model) File() *onnxio.Model { return m.file }

// Network is the model's network: its dense layers and the ops around
// them.
func (m *Model) Network() *onnxio.Network { return m.net }

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
