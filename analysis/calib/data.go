package calib

import "github.com/ecprune/ecprune/analysis"

// Data adapts a Source to analysis.Data, the batch stream the analysis
// reads: each batch becomes one tensor per graph input.
type Data struct{ Src *Source }

// Len is the number of samples.
func (d Data) Len() int { return d.Src.N() }

// Each streams batches of at most batch samples, in order.
func (d Data) Each(batch int, f func(analysis.Batch) error) error {
	for b, err := range d.Src.WithBatch(batch).Batches() {
		if err != nil {
			return err
		}
		ins := make([]*analysis.Tensor, len(b.Inputs))
		for i := range b.Inputs {
			ins[i] = analysis.NewTensor(b.Shapes[i], b.Inputs[i])
		}
		if err := f(analysis.Batch{Start: b.Start, Inputs: ins}); err != nil {
			return err
		}
	}
	return nil
}
