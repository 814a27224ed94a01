package analysis

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ecprune/ecprune/onnxio"
)

// ExactOptions tunes Exact.
type ExactOptions struct {
	Batch int
	// Budget is the largest estimated run time Exact accepts; 0 means no
	// limit (--force).
	Budget time.Duration
	// FlopRate is the assumed speed for the estimate, in multiply-adds per
	// second; 0 means 2e9.
	FlopRate float64
	Workers  int
	Progress func(done, total int)
	Log      func(format string, args ...any)
}

// BudgetError is returned when Exact would take longer than its budget.
type BudgetError struct {
	Estimate, Budget time.Duration
	Weights          int
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("the exact criterion would take about %s for %d weights, over the budget of %s (raise --exact-budget or pass --force)",
		e.Estimate.Round(time.Second), e.Weights, e.Budget)
}

// ExactEstimate is the predicted cost of Exact: multiply-adds and time.
func ExactEstimate(net *onnxio.Network, samples int, opt ExactOptions) (float64, time.Duration) {
	rate := opt.FlopRate
	if rate <= 0 {
		rate = 2e9
	}
	// down[i] is the work of ops i and after, summed from the back
	// (whole numbers: the order of that sum does not change it).
	down := make([]float64, len(net.Ops)+1)
	for i := len(net.Ops) - 1; i >= 0; i-- {
		op := &net.Ops[i]
		if op.Kind == onnxio.OpDense {
			down[i] = down[i+1] + float64(op.Layer.Out*op.Layer.In)
		} else {
			down[i] = down[i+1] + 64 // elementwise work, roughly
		}
	}
	var total float64
	for i, op := range net.Ops {
		if op.Kind != onnxio.OpDense || !op.Layer.Prunable {
			continue
		}
		total += float64(op.Layer.Params()) * float64(samples) * (down[i+1] + 1)
	}
	return total, time.Duration(total / rate * float64(time.Second))
}

// Exact is the paper's non-linear baseline: for each weight, the mean
// squared change of the outputs, (1/N) sum_n ||y'(n) - y(n)||^2, when the
// weight is removed and its bias shifted by delta* (from st), measured by
// re-running the network from the layer on. Only the weight's neuron
// changes, so its pre-activation is patched and the ops after the layer
// are re-run: one downstream pass per weight, in parallel. An element of
// a tied weight is removed from all its readers at once (exactTie).
func Exact(net *onnxio.Network, data Data, st *Stats, opt ExactOptions) (*Scores, error) {
	if opt.Batch <= 0 {
		opt.Batch = 1024
	}
	weights := 0
	for _, ls := range st.Layers {
		weights += ls.Layer.Params()
	}
	_, est := ExactEstimate(net, data.Len(), opt)
	if opt.Log != nil {
		opt.Log("exact: %d weights, estimated %s", weights, est.Round(time.Second))
	}
	if opt.Budget > 0 && est > opt.Budget {
		return nil, &BudgetError{Estimate: est, Budget: opt.Budget, Weights: weights}
	}
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	out := &Scores{Method: "exact"}
	deltas := make([][]float64, len(st.Layers))
	for k, ls := range st.Layers {
		_, d := ls.ECImportance(st.N)
		deltas[k] = d
		out.Layers = append(out.Layers, &LayerScores{Layer: ls.Layer, Score: make([]float64, ls.Layer.Params()), Delta: d})
	}
	done := 0
	passes := 0
	err := data.Each(opt.Batch, func(b Batch) error {
		tr, err := Run(net, b.Inputs)
		if err != nil {
			return err
		}
		base := tr.Outputs()
		tiesDone := map[*onnxio.Tie]bool{}
		for k, ls := range st.Layers {
			l := ls.Layer
			if t := l.Tie; t != nil {
				// A tied element leaves every reader at once (tie.go).
				if !tiesDone[t] {
					tiesDone[t] = true
					if err := exactTie(net, tr, st, t, out, deltas, workers); err != nil {
						return err
					}
				}
				done += l.Params()
				continue
			}
			zid := net.Ops[ls.Op].Out
			aid := net.Ops[ls.Op].In[0]
			z, a := tr.Values[zid], tr.Values[aid]
			rows := a.Len() / l.In
			jobs := make(chan int)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var firstErr error
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					zc := z.Clone()
					local := *tr
					local.Values = append([]*Tensor(nil), tr.Values...)
					local.Values[zid] = zc
					for q := range jobs {
						i, j := q/l.In, q%l.In
						wv, d := l.At(q), deltas[k][q]
						for r := 0; r < rows; r++ {
							zc.Data[r*l.Out+i] = z.Data[r*l.Out+i] + d - wv*a.Data[r*l.In+j]
						}
						tr2, err := RunFrom(net, &local, ls.Op+1)
						if err == nil {
							var sum float64
							for o, y := range tr2.Outputs() {
								for t, v := range y.Data {
									e := v - base[o].Data[t]
									sum += e * e
								}
							}
							out.Layers[k].Score[q] += sum
						}
						for r := 0; r < rows; r++ {
							zc.Data[r*l.Out+i] = z.Data[r*l.Out+i]
						}
						if err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
						}
					}
				}()
			}
			for q := 0; q < l.Params(); q++ {
				jobs <- q
				if opt.Progress != nil && q%256 == 255 {
					opt.Progress(passes*weights+done+q+1, weights*numBatches(data.Len(), opt.Batch))
				}
			}
			close(jobs)
			wg.Wait()
			if firstErr != nil {
				return firstErr
			}
			done += l.Params()
		}
		done = 0
		passes++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if opt.Progress != nil {
		opt.Progress(weights*passes, weights*passes)
	}
	n := float64(st.N)
	for _, ls := range out.Layers {
		for q := range ls.Score {
			ls.Score[q] /= n
		}
	}
	return out, nil
}

func numBatches(n, b int) int { return (n + b - 1) / b }
