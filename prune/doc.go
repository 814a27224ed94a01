// Package prune turns per-weight scores into a pruning: which weights to
// remove (globally, per layer, or in an N:M pattern, with METHOD.md's exact
// count and deterministic tie order) and how much to shift each bias to
// compensate; and ec+ (ECPlus), the sequential, error-aware selection with
// a Gauss-Newton bias refit. It works on the extracted network only;
// package export writes the result into the ONNX file.
package prune
