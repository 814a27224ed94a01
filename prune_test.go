package ecprune

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// recorder is an Events that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	logs   []string
	phases []string // "start analysis", "end analysis"
}

func (r *recorder) Log(m string)   { r.mu.Lock(); r.logs = append(r.logs, m); r.mu.Unlock() }
func (r *recorder) Debug(m string) {}
func (r *recorder) Progress(p string, done, total int) {
	if done == 0 {
		r.mu.Lock()
		r.phases = append(r.phases, "start "+p)
		r.mu.Unlock()
	}
}
func (r *recorder) End(p string) { r.mu.Lock(); r.phases = append(r.phases, "end "+p); r.mu.Unlock() }

func TestPruneEventsAndErrors(t *testing.T) {
	m, err := Load("testdata/models/pde_mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Inputs: []string{"testdata/data/pde_calib_x.npy"}}
	ev := &recorder{}
	res, err := Prune(context.Background(), m, data, Options{Method: "exact", Sparsity: 0.5, Analysis: Analysis{Events: ev, Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if err := res.Save(filepath.Join(t.TempDir(), "p.onnx")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"start analysis", "end analysis", "start exact", "end exact"}; !slices.Equal(ev.phases, want) {
		t.Errorf("phases %v, want %v", ev.phases, want)
	}
	if !slices.ContainsFunc(ev.logs, func(s string) bool { return strings.HasPrefix(s, "statistics of 4 layers over 100 samples") }) {
		t.Errorf("logs %q", ev.logs)
	}
	if r := res.Report; r.Removed == 0 || r.After.NonZeros >= r.Before.NonZeros || r.Calibration.Pruned.SqErr == nil {
		t.Errorf("report %+v", r)
	}
	for _, tc := range []struct {
		name   string
		d      Data
		opt    Options
		option string
	}{
		{"labels needed", data, Options{Method: "taylor"}, "Method"},
		{"no inputs", Data{}, Options{}, "Inputs"},
		{"loss without labels", data, Options{Analysis: Analysis{Objective: ObjLoss}}, "Objective"},
		{"no such layer", data, Options{Method: "ec", Skip: []string{"nope"}}, "Skip"},
		{"N:M with ec+", data, Options{NM: &NM{N: 2, M: 4}}, "NM"},
	} {
		_, err := Prune(context.Background(), m, tc.d, tc.opt)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Option != tc.option {
			t.Errorf("%s: %v, want an *OptionError on %s", tc.name, err, tc.option)
		}
	}
}

// TestPruneNoDenseLayer: a model with nothing to prune (here a Conv and a
// global pool, as SqueezeNet's classifier is) is refused as bad input,
// saying what ecprune prunes, before the calibration data is read.
func TestPruneNoDenseLayer(t *testing.T) {
	f32 := int32(pb.TensorProto_FLOAT)
	dim := func(v int64) *pb.TensorShapeProto_Dimension {
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	batch := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}
	vi := func(name string, dims ...*pb.TensorShapeProto_Dimension) *pb.ValueInfoProto {
		return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
			ElemType: proto.Int32(f32), Shape: &pb.TensorShapeProto{Dim: dims}}}}}
	}
	model := &pb.ModelProto{
		IrVersion:   proto.Int64(7),
		OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &pb.GraphProto{
			Name: proto.String("conv_only"),
			Node: []*pb.NodeProto{
				{OpType: proto.String("Conv"), Input: []string{"input", "w"}, Output: []string{"c"}},
				{OpType: proto.String("GlobalAveragePool"), Input: []string{"c"}, Output: []string{"p"}},
				{OpType: proto.String("Flatten"), Input: []string{"p"}, Output: []string{"output"}},
			},
			Initializer: []*pb.TensorProto{{Name: proto.String("w"), DataType: proto.Int32(f32), Dims: []int64{3, 2, 1, 1}, FloatData: []float32{1, 2, 3, 4, 5, 6}}},
			Input:       []*pb.ValueInfoProto{vi("input", batch, dim(2), dim(1), dim(1))},
			Output:      []*pb.ValueInfoProto{vi("output", batch, dim(3))},
		},
	}
	b, err := proto.Marshal(model)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "conv.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(path)
	if err != nil {
		t.Fatal(err) // evaluable: eval and inspect take it
	}
	// A calibration file that does not exist: the refusal comes first.
	_, err = Prune(context.Background(), m, Data{Inputs: []string{filepath.Join(dir, "missing.npy")}}, Options{Sparsity: 0.5})
	if !IsBadInput(err) || !strings.Contains(err.Error(), "no prunable dense layer") || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want a bad-input error naming %s and saying there is no prunable dense layer", err, path)
	}
}

// TestPruneZeroLayer: when every importance is zero because a layer's
// weights are all zero (an untrained zero-initialised head), the refusal
// names that layer and the model, not the data.
func TestPruneZeroLayer(t *testing.T) {
	m, err := Load("testdata/models/pde_mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	layers := m.Network().Prunable()
	head := layers[len(layers)-1].WeightInit
	found := false
	for _, init := range m.File().Proto.GetGraph().GetInitializer() {
		if init.GetName() == head {
			found = true
			if init.RawData != nil {
				init.RawData = make([]byte, len(init.RawData))
			}
			for i := range init.FloatData {
				init.FloatData[i] = 0
			}
		}
	}
	if !found {
		t.Fatalf("no initializer %s", head)
	}
	b, err := proto.Marshal(m.File().Proto)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "zero_head.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	zm, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Prune(context.Background(), zm, Data{Inputs: []string{"testdata/data/pde_calib_x.npy"}}, Options{Method: "ec", Sparsity: 0.5, Analysis: Analysis{Limit: 50}})
	if !IsBadInput(err) || !strings.Contains(err.Error(), head) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want a bad-input error naming %s and its all-zero layer %s", err, path, head)
	}
}

// TestPruneReportsRecognisedTask: without labels or a named task, the
// report's task is the one ec+ recognised and matched (a classifier's
// logits by KL, a regression's outputs by squared error), and a named task
// is reported as given.
func TestPruneReportsRecognisedTask(t *testing.T) {
	for _, tc := range []struct {
		model, data string
		task        Task
		want, refit string
	}{
		{"mnist_mlp_gemm", "mnist", "", "classification", "bias refit: KL to the dense model's softmax (classifier recognised without labels"},
		{"pde_mlp", "pde", "", "regression", "bias refit: squared error to the dense model's outputs (no labels or --task; not a classifier"},
		{"mnist_mlp_gemm", "mnist", TaskRegression, "regression", "bias refit: squared error"},
	} {
		m, err := Load("testdata/models/" + tc.model + ".onnx")
		if err != nil {
			t.Fatal(err)
		}
		data := Data{Inputs: []string{"testdata/data/" + tc.data + "_calib_x.npy"}}
		res, err := Prune(context.Background(), m, data, Options{Sparsity: 0.5, Analysis: Analysis{Task: tc.task, Limit: 200}})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Report; r.Task != tc.want || !strings.HasPrefix(r.Refit, tc.refit) {
			t.Errorf("%s, task %q: report task %q, refit %q; want %q, %q...", tc.model, tc.task, r.Task, r.Refit, tc.want, tc.refit)
		}
		res.Close()
	}
}
