// Package analysis evaluates and differentiates the dense network that
// onnxio extracts from an ONNX model.
//
// Elimination-compensation pruning (see METHOD.md) scores a weight by how
// much the model output moves when the weight is removed and the neuron's
// bias is shifted to compensate. That needs, for every calibration sample,
// the layer inputs a_j(n) and the output sensitivities J_i(n) = dy(n)/dz_i,
// computed exactly, without an ML runtime. This package provides them:
//
//   - Run and RunFrom: a batched float64 forward pass with ONNX semantics
//     (as ONNX Runtime computes them), keeping every intermediate value in
//     a Trace, so layer activations come for free and a changed layer can
//     be re-evaluated from its op onwards (the 'exact' baseline).
//   - JVP: forward-mode differentiation, many tangent directions at once
//     (one per neuron of a layer), to the graph outputs.
//   - VJP: reverse-mode differentiation, many cotangents at once (one per
//     output component), back to any values, e.g. every layer's Dense
//     output.
//
// Which mode is cheaper depends on layer widths versus the output size, so
// both exist; tests check that they agree with each other and with finite
// differences. Matrix products go through one function (matmul) backed by
// gonum's BLAS so that a faster BLAS can be swapped in.
//
// None of these functions modifies the network or the trace it is given,
// so workers may share them (the 'exact' baseline runs RunFrom from many
// goroutines on one trace).
package analysis
