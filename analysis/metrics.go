package analysis

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Quality is how a network does on a data set, alone (loss, accuracy) and
// against a reference network (output error, argmax agreement).
type Quality struct {
	N        int      `json:"samples"`
	Loss     *float64 `json:"loss,omitempty"`     // mean cross-entropy, or mean squared error for regression
	Accuracy *float64 `json:"accuracy,omitempty"` // classification only
	// Against the reference (nil fields when there is none).
	MSE        *float64 `json:"output_mse,omitempty"`               // mean over samples and output values of (y - y_ref)^2
	SqErr      *float64 `json:"output_sq_err_per_sample,omitempty"` // mean over samples of ||y - y_ref||^2 (METHOD.md's units)
	MaxAbs     *float64 `json:"output_max_abs,omitempty"`
	ArgmaxSame *float64 `json:"argmax_agreement,omitempty"` // fraction of samples whose argmax output is the reference's
}

// Evaluate runs net (and ref, if not nil) over data and measures Quality.
// Labels (optional) give loss and accuracy. outputs, if not nil, receives
// every batch's outputs in order (for --save-outputs).
func Evaluate(net, ref *onnxio.Network, data Data, labels *Labels, task Task, batch int, outputs func(start int, outs []*Tensor) error) (*Quality, error) {
	if batch <= 0 {
		batch = 256
	}
	q := &Quality{}
	var loss, correct, sq, maxAbs, agree float64
	var count int
	final := lastOpKind(net)
	err := data.Each(batch, func(b Batch) error {
		n := b.Inputs[0].Shape[0]
		tr, err := Run(net, b.Inputs)
		if err != nil {
			return fmt.Errorf("samples %d..%d: %w", b.Start, b.Start+n-1, err)
		}
		outs := tr.Outputs()
		if outputs != nil {
			if err := outputs(b.Start, outs); err != nil {
				return err
			}
		}
		if labels != nil {
			y := outs[0]
			per := y.Len() / n
			for s := 0; s < n; s++ {
				row := y.Data[s*per : (s+1)*per]
				switch task {
				case TaskRegression:
					if labels.Width != per {
						return fmt.Errorf("targets have %d values per sample, the model's first output %d", labels.Width, per)
					}
					t := labels.Target[(b.Start+s)*per : (b.Start+s+1)*per]
					for k := range row {
						d := row[k] - t[k]
						loss += d * d / float64(per)
					}
				default:
					c := labels.Class[b.Start+s]
					if c < 0 || c >= per {
						return fmt.Errorf("label %d of sample %d is outside the model's %d classes", c, b.Start+s, per)
					}
					loss += crossEntropy(row, c, final)
					if argmax(row) == c {
						correct++
					}
				}
			}
		}
		if ref != nil {
			rt, err := Run(ref, b.Inputs)
			if err != nil {
				return fmt.Errorf("reference, samples %d..%d: %w", b.Start, b.Start+n-1, err)
			}
			routs := rt.Outputs()
			for o := range outs {
				per := outs[o].Len() / n
				for s := 0; s < n; s++ {
					for k := 0; k < per; k++ {
						d := outs[o].Data[s*per+k] - routs[o].Data[s*per+k]
						sq += d * d
						maxAbs = math.Max(maxAbs, math.Abs(d))
					}
					if o == 0 && argmax(outs[o].Data[s*per:(s+1)*per]) == argmax(routs[o].Data[s*per:(s+1)*per]) {
						agree++
					}
				}
				count += outs[o].Len()
			}
		}
		q.N += n
		return nil
	})
	if err != nil {
		return nil, err
	}
	if q.N == 0 {
		return q, nil
	}
	n := float64(q.N)
	if labels != nil {
		l := loss / n
		q.Loss = &l
		if task != TaskRegression {
			a := correct / n
			q.Accuracy = &a
		}
	}
	if ref != nil {
		mse, pers, ag := sq/float64(max(1, count)), sq/n, agree/n
		q.MSE, q.SqErr, q.MaxAbs, q.ArgmaxSame = &mse, &pers, &maxAbs, &ag
	}
	return q, nil
}

// crossEntropy of one sample: on logits (or log-probabilities), or on
// probabilities when the model ends with Softmax.
func crossEntropy(row []float64, c int, final onnxio.OpKind) float64 {
	if final == onnxio.OpSoftmax {
		return -math.Log(math.Max(row[c], 1e-300))
	}
	return LogSumExp(row) - row[c]
}

// LogSumExp is log sum_k exp(x_k), shifted by the largest x_k so that it
// neither overflows nor loses the small terms.
func LogSumExp(x []float64) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

func argmax(row []float64) int {
	best := 0
	for k, v := range row {
		if v > row[best] {
			best = k
		}
	}
	return best
}
