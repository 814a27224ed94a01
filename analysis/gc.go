package analysis

import "github.com/ecprune/ecprune/onnxio"

// gcSlack is the heap growth allowed between collections on a large
// model. Go's default (GOGC=100) lets the heap grow to twice what is live
// before collecting: on a 42M-weight model, whose analysis holds about
// 850 MB (S1/S2 in float64, the model's float32 bytes, a batch's buffers),
// that is 850 MB of garbage on top, as much as all the rest. Nearly all of
// that live memory is a few large pointer-free slices, which the collector
// does not scan, so collecting often is cheap: with a slack of 16 MB the
// 42M-weight model's analysis runs about 60 collections instead of 6, a
// millisecond each (measured: the same wall time within noise, and the
// peak RSS 20 MB lower than with 64 MB of slack).
const gcSlack = 16 << 20

// GCPercent is the collector's growth (GOGC) that suits an analysis of
// net: 100 * gcSlack / (estimated live bytes), rounded, between 1 and 100,
// so that small models keep Go's default and large ones grow by about
// gcSlack. The estimate is what an analysis holds per weight: S1 and S2 in
// float64 and the weights (4 bytes when float32-resident, else 8). The
// process sets it (ecprune and the benchmark harness), since it is a
// property of the whole heap.
func GCPercent(net *onnxio.Network) int {
	live := 0.0
	for _, l := range net.Layers {
		per := 16.0 + 8
		if l.W32 != nil {
			per = 16 + 4
		}
		live += per * float64(l.Params())
	}
	pct := int(100*gcSlack/max(live, 1) + 0.5)
	return max(1, min(100, pct))
}
