package ecplus

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// refitView is what the bias refit matches: the original network's outputs
// under squared error, or, for classifiers, its logits under
// KL(softmax(y0) || softmax(y')). A final Softmax or LogSoftmax is cut
// off so that the KL's generalised Gauss-Newton matrix is taken on the
// logits, where it is the Fisher matrix diag(p) - p p^T (on
// log-probabilities the KL is linear and its Hessian zero).
type refitView struct {
	task analysis.Task
	head int // index of the cut Softmax/LogSoftmax op, or -1
	kl   bool

	out   []int // value ids of the view's outputs
	per   []int // values per sample of each
	width int   // KL: length of the softmax axis (the last)
	y0    [][]float64
	log   []string
	limit int // bytes y0 may take
	// why says what the refit matches and why, for the report.
	why string
}

func newRefitView(net *onnxio.Network, task analysis.Task, limit int) *refitView {
	rv := &refitView{task: task, head: -1, limit: limit}
	if len(net.Outputs) == 1 {
		for i := len(net.Ops) - 1; i >= 0; i-- {
			op := &net.Ops[i]
			if op.Out != net.Outputs[0] {
				continue
			}
			if (op.Kind == onnxio.OpSoftmax || op.Kind == onnxio.OpLogSoftmax) && len(op.In) == 1 {
				rv.head = i
			}
			break
		}
	}
	rv.kl = task == analysis.TaskClassification || rv.head >= 0
	switch {
	case rv.head >= 0:
		rv.why = fmt.Sprintf("KL to the dense model's softmax (the graph ends in %s)", net.Ops[rv.head].Kind)
	case task == analysis.TaskClassification:
		rv.why = "KL to the dense model's softmax (classification task)"
	case task == analysis.TaskRegression:
		rv.why = "squared error to the dense model's outputs (regression task)"
	}
	return rv
}

// Label-free classifiers. With the task TaskAuto (no labels, none named), a model is
// treated as a classifier, its refit matching the dense model's softmax
// by KL, when its graph ends in Softmax or LogSoftmax over the last axis,
// or when all of these hold:
//   - it has one output, of rank 2 or more, with K >= 2 values on the
//     last axis, computed directly by a dense layer (logits, not an
//     activation's output);
//   - on the first calibration batch the argmax over that axis takes at
//     least 2 different values, and the softmax is confident: its largest
//     probability is on average at least logitConfidence.
//
// A trained classifier's logits on data like its training data pass all
// three (LeNet-300-100 on MNIST: mean top probability 0.93). A regression
// model with a width-1 output (the PDE model) never does; a multi-output
// regression whose outputs happen to look like confident logits is
// pruned with the task analysis.TaskRegression.
const logitConfidence = 0.7

// looksLikeLogits applies the calibration test to y ([n, ..., K]).
func looksLikeLogits(y *analysis.Tensor) (bool, string) {
	k := y.Shape[y.Rank()-1]
	rows := y.Len() / max(k, 1)
	if k < 2 || rows == 0 {
		return false, fmt.Sprintf("an output of width %d", k)
	}
	seen := map[int]bool{}
	p := make([]float64, k)
	var conf float64
	for r := 0; r < rows; r++ {
		row := y.Data[r*k : (r+1)*k]
		best := 0
		for c, v := range row {
			if v > row[best] {
				best = c
			}
		}
		seen[best] = true
		logSoftmax(p, row)
		conf += math.Exp(p[best])
	}
	conf /= float64(rows)
	if len(seen) < 2 || !(conf >= logitConfidence) {
		return false, fmt.Sprintf("a final dense output of width %d, %d argmax classes and mean top softmax probability %.2f on the first batch", k, len(seen), conf)
	}
	return true, fmt.Sprintf("a final dense output of width %d whose calibration outputs look like logits: %d argmax classes, mean top softmax probability %.2f", k, len(seen), conf)
}

// settle fixes the view from a trace of the original network on the
// first batch (n samples, total samples in all).
func (rv *refitView) settle(net *onnxio.Network, tr *analysis.Trace, n, total int) {
	if rv.head >= 0 {
		op := &net.Ops[rv.head]
		x := tr.Values[op.In[0]]
		ax := op.Axis
		if ax < 0 {
			ax += x.Rank()
		}
		if ax != x.Rank()-1 {
			rv.log = append(rv.log, fmt.Sprintf("the final %s is not over the last axis: the refit matches the outputs by squared error", op.Kind))
			rv.head, rv.kl = -1, false
		}
	}
	rv.out = net.Outputs
	if rv.head >= 0 {
		rv.out = []int{net.Ops[rv.head].In[0]}
	}
	if rv.task == TaskAuto && rv.head < 0 {
		var ok bool
		var what string
		switch y := tr.Values[rv.out[0]]; {
		case len(rv.out) != 1:
			what = fmt.Sprintf("%d outputs", len(rv.out))
		case y.Rank() < 2:
			what = "an output without a class axis"
		case !lastIsLayer(net, rv.out[0]):
			what = "an output not computed by a dense layer"
		default:
			ok, what = looksLikeLogits(y)
		}
		if ok {
			rv.kl = true
			rv.why = "KL to the dense model's softmax (classifier recognised without labels: " + what + ")"
		} else {
			rv.why = "squared error to the dense model's outputs (no labels or --task; not a classifier: " + what + ")"
		}
	}
	if rv.kl {
		y := tr.Values[rv.out[0]]
		switch {
		case len(rv.out) != 1:
			rv.log = append(rv.log, fmt.Sprintf("a classifier with %d outputs: the refit matches them by squared error", len(rv.out)))
			rv.kl = false
		case y.Rank() < 2:
			rv.log = append(rv.log, "a classifier whose output has no class axis: the refit matches it by squared error")
			rv.kl = false
		default:
			rv.width = y.Shape[y.Rank()-1]
		}
	}
	if !rv.kl && len(rv.log) > 0 && (rv.why == "" || rv.why[0] == 'K') {
		rv.why = "squared error to the dense model's outputs (" + rv.log[len(rv.log)-1] + ")"
	}
	rv.per = make([]int, len(rv.out))
	k := 0
	for o, id := range rv.out {
		rv.per[o] = tr.Values[id].Len() / n
		k += rv.per[o]
	}
	if total*k*8 <= rv.limit {
		rv.y0 = make([][]float64, len(rv.out))
	}
}

// keepTargets stores the original network's view outputs of a batch.
func (rv *refitView) keepTargets(tr *analysis.Trace, n int) error {
	if rv.y0 == nil {
		return nil
	}
	for o, id := range rv.out {
		y := tr.Values[id].Data
		if len(y) != n*rv.per[o] {
			return fmt.Errorf("output %d has %d values for %d samples, want %d each", o, len(y), n, rv.per[o])
		}
		rv.y0[o] = append(rv.y0[o], y...)
	}
	return nil
}

// of is net seen through the view: the same ops up to the cut head.
func (rv *refitView) of(net *onnxio.Network) *onnxio.Network {
	if rv.head < 0 {
		return net
	}
	c := *net
	c.Ops = net.Ops[:rv.head:rv.head]
	c.Outputs = rv.out
	return &c
}

// k is the number of matched values per sample.
func (rv *refitView) k() int {
	k := 0
	for _, p := range rv.per {
		k += p
	}
	return k
}

// loss adds sum over a batch's rows of the per-sample objective, and
// returns dloss/dy (one [1, shape] cotangent per output) when cot is set.
func (rv *refitView) loss(ys []*analysis.Tensor, y0 [][]float64, cot bool) (float64, []*analysis.Tensor) {
	var total float64
	var dy []*analysis.Tensor
	if cot {
		dy = make([]*analysis.Tensor, len(ys))
		for o, y := range ys {
			dy[o] = analysis.Zeros(append([]int{1}, y.Shape...)...)
		}
	}
	if rv.kl {
		c := rv.width
		y, t := ys[0].Data, y0[0]
		p, p0 := make([]float64, c), make([]float64, c)
		for r := 0; r*c < len(y); r++ {
			lse := logSoftmax(p, y[r*c:(r+1)*c])
			lse0 := logSoftmax(p0, t[r*c:(r+1)*c])
			for q := 0; q < c; q++ {
				// KL = sum p0 (log p0 - log p), log-probabilities being
				// the logits minus their log-sum-exp.
				pq0 := math.Exp(p0[q])
				if pq0 > 0 {
					total += pq0 * ((t[r*c+q] - lse0) - (y[r*c+q] - lse))
				}
				if cot {
					dy[0].Data[r*c+q] = math.Exp(p[q]) - pq0
				}
			}
		}
		return total, dy
	}
	for o, y := range ys {
		for q, v := range y.Data {
			d := v - y0[o][q]
			total += d * d
			if cot {
				dy[o].Data[q] = 2 * d
			}
		}
	}
	return total, dy
}

// logSoftmax writes log softmax(x) to dst and returns log sum exp(x).
func logSoftmax(dst, x []float64) float64 {
	lse := analysis.LogSumExp(x)
	for q, v := range x {
		dst[q] = v - lse
	}
	return lse
}

// lastIsLayer tells whether value id is the output of a dense layer's op.
func lastIsLayer(net *onnxio.Network, id int) bool {
	for i := len(net.Ops) - 1; i >= 0; i-- {
		if net.Ops[i].Out == id {
			return net.Ops[i].Layer != nil
		}
	}
	return false
}
