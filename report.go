package ecprune

import (
	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
)

// DensifyNote is said in every size report: sparse storage shrinks files,
// ONNX Runtime densifies it on load.
const DensifyNote = "ONNX Runtime densifies sparse tensors when it loads them: the pruned file is smaller to store and ship, not faster or smaller in memory at run time"

// Size is a saved model's size and its dense layers' weights.
type Size struct {
	Bytes     int64 `json:"bytes"`
	GzipBytes int64 `json:"gzip_bytes"`
	Params    int   `json:"params"`
	NonZeros  int   `json:"nonzeros"`
}

// LayerReport is one layer's outcome.
type LayerReport struct {
	Name          string  `json:"name"`
	Out           int     `json:"out"`
	In            int     `json:"in"`
	Params        int     `json:"params"`
	NonZerosBef   int     `json:"nonzeros_before"`
	NonZeros      int     `json:"nonzeros"`
	Density       float64 `json:"density"`
	Format        string  `json:"format"`
	TensorBytes   int64   `json:"tensor_bytes"`
	BiasShiftNorm float64 `json:"bias_shift_norm"`
	Predicted     float64 `json:"predicted_error"`
	// Local says why the layer is analysed on its own output's change
	// rather than the model's (empty: the model's output or loss).
	Local string `json:"local_objective,omitempty"`
}

// QualityPair measures the original and the pruned model on the same
// samples (the pruned one against the original).
type QualityPair struct {
	Original *analysis.Quality `json:"original"`
	Pruned   *analysis.Quality `json:"pruned"`
}

// Report is what Prune did (weight granularity) and, once the model is
// saved, what it measured.
type Report struct {
	Model          string        `json:"model"`
	Output         string        `json:"output"`
	Method         string        `json:"method"`
	Sparsity       float64       `json:"sparsity"`
	NM             string        `json:"nm,omitempty"`
	Scope          string        `json:"scope"`
	Objective      string        `json:"objective"`
	Refit          string        `json:"refit,omitempty"`
	Task           string        `json:"task"`
	Derivatives    string        `json:"derivatives"`
	Seed           uint64        `json:"seed"`
	Samples        int           `json:"calibration_samples"`
	Holdout        int           `json:"holdout_samples"`
	Removed        int           `json:"removed"`
	Prunable       int           `json:"prunable"`
	Before         Size          `json:"before"`
	After          Size          `json:"after"`
	Layers         []LayerReport `json:"layers"`
	Calibration    QualityPair   `json:"calibration"`
	HoldoutQ       *QualityPair  `json:"holdout,omitempty"`
	PredictedSqErr *float64      `json:"predicted_sq_err_per_sample,omitempty"`
	// PredictedClamped: the sum came out below zero (rounding) and was
	// reported as 0.
	PredictedClamped bool   `json:"predicted_clamped_to_zero,omitempty"`
	Note             string `json:"note"`
	Seconds          struct {
		Analysis float64 `json:"analysis"`
		Select   float64 `json:"select"`
		Write    float64 `json:"write"`
		Evaluate float64 `json:"evaluate"`
	} `json:"seconds"`
}

// UnitSize is a model's size for structured pruning: what shrinks.
type UnitSize struct {
	Bytes     int64 `json:"bytes"`
	GzipBytes int64 `json:"gzip_bytes"`
	Params    int64 `json:"params"`     // elements of every float initializer
	MACs      int64 `json:"dense_macs"` // multiply-adds of the dense layers per sample
}

// UnitGroupReport is one group's outcome: units of Layer feeding
// Consumer.
type UnitGroupReport struct {
	Layer     string  `json:"layer"`
	Consumer  string  `json:"consumer"`
	Units     int     `json:"units"`
	Kept      int     `json:"kept"`
	Predicted float64 `json:"predicted_error"`
	Heads     int     `json:"heads,omitempty"` // attention heads: units go Units/Heads at a time
	KeptHeads int     `json:"kept_heads,omitempty"`
}

// UnitReport is what Prune did with Neuron granularity and, once the
// model is saved, what it measured.
type UnitReport struct {
	Model       string            `json:"model"`
	Output      string            `json:"output"`
	Granularity string            `json:"granularity"`
	Method      string            `json:"method"`
	Sparsity    float64           `json:"sparsity"`
	Scope       string            `json:"scope"`
	Objective   string            `json:"objective"`
	Derivatives string            `json:"derivatives"`
	Seed        uint64            `json:"seed"`
	Samples     int               `json:"calibration_samples"`
	Holdout     int               `json:"holdout_samples"`
	Removed     int               `json:"removed_units"`
	Removable   int               `json:"removable_units"`
	Before      UnitSize          `json:"before"`
	After       UnitSize          `json:"after"`
	Groups      []UnitGroupReport `json:"groups"`
	Fixed       []string          `json:"not_removable,omitempty"`
	Calibration QualityPair       `json:"calibration"`
	HoldoutQ    *QualityPair      `json:"holdout,omitempty"`
	Seconds     struct {
		Analysis float64 `json:"analysis"`
		Write    float64 `json:"write"`
		Evaluate float64 `json:"evaluate"`
	} `json:"seconds"`
}

// ModelSize measures a saved model: bytes on disk, gzip bytes, dense
// weights and non-zeros of its dense layers.
func ModelSize(m *Model) (Size, error) {
	return measureAsync(m.path, nil).wait(m.net)
}

// pendingSize is export.Sizes running in the background: gzip of a large
// model takes seconds.
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
func (p *pendingSize) wait(net *onnxio.Network) (Size, error) {
	<-p.done
	if p.err != nil {
		return Size{}, p.err
	}
	params, nnz, _ := export.Counts(net)
	return Size{Bytes: p.s.Disk, GzipBytes: p.s.Gzip, Params: params, NonZeros: nnz}, nil
}
