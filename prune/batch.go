package prune

import (
	"fmt"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// passBatch is the number of calibration samples per batch of the passes
// SparseGPT makes over the data (a variable so that tests can cover several
// batches with few samples).
var passBatch = 256

func batchLen(b analysis.Batch) (int, error) {
	if len(b.Inputs) == 0 || b.Inputs[0] == nil || b.Inputs[0].Rank() == 0 {
		return 0, fmt.Errorf("samples from %d: a batch without inputs", b.Start)
	}
	return b.Inputs[0].Shape[0], nil
}

// prefixTo is net evaluated up to (not including) op, with value id as
// its only output.
func prefixTo(net *onnxio.Network, op, id int) *onnxio.Network {
	c := *net
	c.Ops = net.Ops[:op:op]
	c.Outputs = []int{id}
	return &c
}

// grow returns (*buf)[:n], reallocating when too short: per-batch scratch
// reused across batches.
func grow(buf *[]float64, n int) []float64 {
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	return (*buf)[:n]
}
