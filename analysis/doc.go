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
//     (one per neuron of a layer), to the graph outputs; JVPSum seeds
//     several values in one pass (ec+'s refit needs J v for v spread over
//     every layer's biases).
//   - VJP: reverse-mode differentiation, many cotangents at once (one per
//     output component), back to any values, e.g. every layer's Dense
//     output.
//
// Which mode is cheaper depends on layer widths versus the output size, so
// both exist; tests check that they agree with each other and with finite
// differences. Matrix products go through one function (matmul) and
// gonum's BLAS interface, behind which the default build runs the package's
// own kernels (internal/gemm) and the openblas build OpenBLAS for the
// large products; JVPSum32 and VJP32 run the products in float32 for
// callers working on probe estimates.
//
// None of these functions modifies the network or the trace it is given,
// so workers may share them (the 'exact' baseline runs RunFrom from many
// goroutines on one trace).
package analysis
