// Package ecprune prunes the dense layers of ONNX models with
// elimination-compensation: every removed weight shifts its neuron's bias
// by the amount that best makes up for it on calibration data, and a
// weight's importance is what its removal still costs at the model's
// output after that shift (docs/METHOD.md).
//
// This package is the pipeline in a few calls, for Go programs and for
// the ecprune command alike: Load reads a model, Prune computes the
// statistics once on calibration Data, selects with a method of the
// registry (Methods; ec+ by default) and holds the pruned model in a
// Result, whose Save writes it and measures it, read back, against the
// original. Sweep compares methods over sparsities on the same
// statistics; Evaluate and Compare measure models on data. Options' zero
// value is the recommended setting; Events receives progress and log
// lines (nil: silent); problems with option values are *OptionError
// values naming the option by its field.
//
// The packages below do one step each and are usable on their own:
// onnxio (the format and the graph), analysis (evaluation, derivatives,
// statistics, criteria), prune (selection, compensation, ec+), export
// (write-back, sizes). Methods live in the registry here, one file each,
// because a method is a recipe over those steps (which statistics, which
// scores, which selection), not a step of its own.
package ecprune
