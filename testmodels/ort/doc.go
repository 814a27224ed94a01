// Package ort runs ONNX models through ONNX Runtime (via the cgo binding
// github.com/yalue/onnxruntime_go) so that tests can compare what ecprune
// computes, or what a pruned model computes, against an independent,
// widely used reference implementation.
//
// It is test support, not part of the tool: every value goes in and comes out
// as float64 (Tensor) and is converted to or from the element type the model
// declares, so tests never deal with ORT's typed tensors or their lifetimes.
//
// The shared library is not vendored. LibPath looks for it in
// $ECPRUNE_ORT_LIB, then in .ci/ort (where scripts/setup-deps.sh installs the
// npm package onnxruntime-node). Require skips a test when the library is
// missing, except under CI=true, where a missing library is a failure: ORT
// comparisons may be skipped on a developer's machine, never in CI.
package ort
