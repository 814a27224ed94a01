package zoo

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"

	"codeberg.org/sbinet/npyio/npy"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/testmodels/ort"
)

// RelDir is the zoo's folder relative to the repository root.
const RelDir = "testdata/zoo"

// Entry is one model of the manifest.
type Entry struct {
	Name        string `json:"name"`
	File        string `json:"file"`         // model, relative to Dir
	Calib       string `json:"calib"`        // calibration inputs (.npy)
	TorchOutput string `json:"torch_output"` // torch's outputs on Calib (.npy)
	Family      string `json:"family"`       // mlp, cnn, transformer, vit, resmlp, mixer, rnn, einsum, tied, old
	Opset       int64  `json:"opset"`
	// InitializersAsInputs: exported with keep_initializers_as_inputs, so
	// every initializer is also a graph input.
	InitializersAsInputs bool   `json:"initializers_as_inputs"`
	InputShape           []int  `json:"input_shape"` // one sample's shape, batch excluded
	InputType            string `json:"input_type"`  // numpy dtype of Calib: float32, or int64 for token ids
	Samples              int    `json:"samples"`
	// Linear is the number of distinct nn.Linear weights (MultiheadAttention's
	// in_proj and out_proj included, a shared weight once): the dense
	// layers ecprune should find and be able to prune.
	Linear        int            `json:"linear"`
	Tied          []string       `json:"tied"` // modules (of Weights) whose weight has another use
	Weights       []Weight       `json:"weights"`
	EinsumWeights []Weight       `json:"einsum_weights"` // constant einsum operands; not in Linear
	Ops           map[string]int `json:"ops"`            // op-type histogram of the graph
	Notes         string         `json:"notes"`
	Bytes         int64          `json:"bytes"`
}

// Weight is one nn.Linear weight (or einsum operand), Out x In, and the
// ONNX tensors that hold its values.
type Weight struct {
	Module  string   `json:"module"` // PyTorch parameter name, e.g. "blocks.0.attn.qkv.weight"
	Out     int      `json:"out"`
	In      int      `json:"in"`
	Tensors []Tensor `json:"tensors"`
}

// Tensor is an initializer or Constant output holding a weight.
type Tensor struct {
	Name   string   `json:"tensor"`
	Layout string   `json:"layout"`  // "out,in" or "in,out" (transposed by constant folding)
	ReadBy []string `json:"read_by"` // op types of the nodes reading it
}

// Dense reports whether a Gemm, MatMul or Einsum reads the tensor, or a
// Slice (a packed attention projection split into the blocks that
// MatMuls read) or a Transpose (a Linear exported without constant
// folding): the copy of a weight that pruning the layer changes (an
// embedding's Gather alone does not make it one).
func (t Tensor) Dense() bool {
	return slices.ContainsFunc(t.ReadBy, func(op string) bool {
		return op == "Gemm" || op == "MatMul" || op == "Einsum" || op == "Slice" || op == "Transpose"
	})
}

// Array is a dense array widened to float64 (token ids are exact).
type Array struct {
	Shape []int
	Data  []float64
	Type  string // numpy dtype in the file
}

type manifest struct {
	Models []Entry `json:"models"`
}

// Dir returns the zoo's folder: RelDir under the repository root, found by
// walking up from the working directory to go.mod.
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the zoo: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(RelDir)), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the zoo: no go.mod above the working directory")
		}
		dir = parent
	}
}

// List reads the manifest, in its order.
func List() ([]Entry, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "zoo.json"))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, "zoo.json"), err)
	}
	if len(m.Models) == 0 {
		return nil, fmt.Errorf("%s lists no models", filepath.Join(dir, "zoo.json"))
	}
	return m.Models, nil
}

// Load returns the model's path and its calibration inputs, [Samples,
// InputShape...].
func Load(e Entry) (modelPath string, x Array, err error) {
	dir, err := Dir()
	if err != nil {
		return "", Array{}, err
	}
	modelPath = filepath.Join(dir, e.File)
	if _, err := os.Stat(modelPath); err != nil {
		return "", Array{}, err
	}
	x, err = ReadNpy(filepath.Join(dir, e.Calib))
	if err != nil {
		return "", Array{}, err
	}
	want := append([]int{e.Samples}, e.InputShape...)
	if !slices.Equal(x.Shape, want) {
		return "", Array{}, fmt.Errorf("%s: calibration shape %v, manifest says %v", e.Name, x.Shape, want)
	}
	return modelPath, x, nil
}

// CalibPath returns the path of the model's calibration .npy file.
func CalibPath(e Entry) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, e.Calib), nil
}

// Torch returns torch's outputs on the calibration inputs.
func Torch(e Entry) (Array, error) {
	dir, err := Dir()
	if err != nil {
		return Array{}, err
	}
	return ReadNpy(filepath.Join(dir, e.TorchOutput))
}

// ReadNpy reads a C-order float32, float64 or int64 .npy file.
func ReadNpy(path string) (Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return Array{}, err
	}
	defer f.Close()
	r, err := npy.NewReader(f)
	if err != nil {
		return Array{}, fmt.Errorf("reading %s: %w", path, err)
	}
	h := r.Header.Descr
	if h.Fortran {
		return Array{}, fmt.Errorf("reading %s: Fortran order", path)
	}
	a := Array{Shape: slices.Clone(h.Shape)}
	typ := npy.TypeFrom(h.Type)
	if typ == nil {
		return Array{}, fmt.Errorf("reading %s: dtype %s", path, h.Type)
	}
	a.Type = typ.String()
	switch typ.Kind() {
	case reflect.Float32:
		a.Data, err = readAs[float32](r)
	case reflect.Float64:
		a.Data, err = readAs[float64](r)
	case reflect.Int64:
		a.Data, err = readAs[int64](r)
	default:
		return Array{}, fmt.Errorf("reading %s: dtype %q", path, h.Type)
	}
	if err != nil {
		return Array{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return a, nil
}

func readAs[T float32 | float64 | int64](r *npy.Reader) ([]float64, error) {
	var v []T
	if err := r.Read(&v); err != nil {
		return nil, err
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

// RelErr is max|got-want| over max|want|: the error relative to the
// output's scale, so that entries near zero do not dominate.
func RelErr(got, want []float64) (float64, error) {
	if len(got) != len(want) {
		return 0, fmt.Errorf("%d values, reference %d", len(got), len(want))
	}
	diff, scale := 0.0, 0.0
	for i, w := range want {
		diff = math.Max(diff, math.Abs(got[i]-w))
		scale = math.Max(scale, math.Abs(w))
	}
	if diff == 0 {
		return 0, nil
	}
	if scale == 0 || math.IsNaN(diff) {
		return math.Inf(1), nil
	}
	return diff / scale, nil
}

// Evaluate runs the extracted net (of the model at modelPath, fed with
// its single input x) in ecprune's evaluator and in ONNX Runtime, and
// returns the worst RelErr over the outputs.
func Evaluate(net *onnxio.Network, modelPath string, x Array) (float64, error) {
	if !net.Evaluable {
		return 0, fmt.Errorf("not evaluable: %s", net.Reason)
	}
	if len(net.Inputs) != 1 {
		return 0, fmt.Errorf("%d network inputs, want 1", len(net.Inputs))
	}
	tr, err := analysis.Run(net, []*analysis.Tensor{analysis.NewTensor(slices.Clone(x.Shape), slices.Clone(x.Data))})
	if err != nil {
		return 0, fmt.Errorf("evaluator: %w", err)
	}
	ref, err := RunORT(modelPath, net.Inputs[0].Name, x)
	if err != nil {
		return 0, err
	}
	worst := 0.0
	for i, id := range net.Outputs {
		name := net.Values[id].Name
		want, ok := ref[name]
		if !ok {
			return 0, fmt.Errorf("output %q: not among ONNX Runtime's", name)
		}
		e, err := RelErr(tr.Outputs()[i].Data, want.Data)
		if err != nil {
			return 0, fmt.Errorf("output %q: %w", name, err)
		}
		worst = math.Max(worst, e)
	}
	return worst, nil
}

// RunORT runs the model in ONNX Runtime on x fed to the named input.
func RunORT(modelPath, input string, x Array) (map[string]ort.Tensor, error) {
	shape := make([]int64, len(x.Shape))
	for i, d := range x.Shape {
		shape[i] = int64(d)
	}
	return ort.Run(modelPath, map[string]ort.Tensor{input: {Shape: shape, Data: x.Data}})
}
