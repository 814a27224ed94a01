// Package prune turns per-weight scores into a pruning: which weights to
// remove (globally, per layer, or in an N:M pattern, with METHOD.md's exact
// count and deterministic tie order) and how much to shift each bias to
// compensate; SparseGPT and the unit-level (neuron) selections. It works
// on the extracted network only; package export writes the result into
// the ONNX file.
//
// The tie order every method selects in (CompareScored, Smallest,
// MarkSmallest) lives here, in select.go, so that ec+ (package
// prune/ecplus), which depends on this package for its budgets and plans,
// ranks exactly as Select does. Errors about option values are
// OptionErrors that name the option's field, for front ends to map to
// their own names.
package prune
