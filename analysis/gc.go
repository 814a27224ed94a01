package analysis

import "github.com/ecprune/ecprune/onnxio"

// gcSlack is the heap growth allowed between collections on a large
// model. Go's default (GOGC=100) lets the heap grow to twice what is live
// before collecting: on a 42M-weight model, whose analysis holds about
// 1.5 GB (float64 weights, S1/S2, the protobuf, a batch's buffers), that is
// 1.5 GB of garbage on top, as much as all the rest. Nearly all of that
// live memory is a few large pointer-free slices, which the collector does
// not scan, so collecting more often is cheap: with a slack of 64 MB the
// 42M-weight model's prune runs about 90 collections instead of 6, a few
// milliseconds each (measured: the same wall time within noise, 1.7 GB
// less RSS than the default).
const gcSlack = 64 << 20

// GCPercent is the collector's growth (GOGC) that suits an analysis of
// net: 100 * gcSlack / (estimated live bytes), between 5 and 100, so that
// small models keep Go's default and large ones grow by about gcSlack. The
// estimate is what an analysis holds per weight: W, S1 and S2 in float64
// and the model's float32 bytes (28 bytes). The process sets it (ecprune
// and the benchmark harness), since it is a property of the whole heap.
func GCPercent(net *onnxio.Network) int {
	weights := 0
	for _, l := range net.Layers {
		weights += len(l.W)
	}
	pct := int(100 * gcSlack / max(float64(weights)*28, 1))
	return max(5, min(100, pct))
}
