// Package calib reads the calibration data that ecprune feeds through a
// model while it decides which neurons of the fully-connected layers can be
// pruned, and the labels or targets used to score the pruned model.
//
// It exists because calibration data arrives from users in whatever format
// their training pipeline produced — NumPy .npy/.npz files or ONNX
// TensorProto .pb files, float32/float64/float16/uint8, C or Fortran order,
// flat or image-shaped — and every analysis pass needs the same thing: the
// samples as float64, shape-checked against the model's declared inputs,
// validated (no NaN/Inf), and streamed in batches so that large data sets
// never have to fit in memory as float64. Centralising that here gives the
// CLI one place that turns a bad file into a one-line error.
//
// # Inputs
//
// [Open] takes data files and the model's graph inputs ([InputSpec], full
// declared shape including the batch axis, -1 or 0 for dynamic dims):
//
//   - a single .npz is keyed by graph input name (an entry "x" or "x.npy");
//     a single-input model may use an .npz holding exactly one array under
//     any key;
//   - otherwise there must be one file per graph input, matched in graph
//     input order; each is a .npy, a .pb (onnx TensorProto) or a
//     single-array .npz.
//
// The first axis of every array is the sample axis; all inputs must have
// the same number of samples. The remaining axes must match the declared
// per-sample shape (the declared shape without its batch axis). Dynamic
// dims match anything. When the ranks differ the data is reshaped (row-major)
// only when that is unambiguous: a flat [N, k] array, a flat declared shape,
// or shapes that differ only by axes of size 1; a single dynamic dim can be
// inferred from a flat array. Anything else is a shape error naming the file,
// the expected and the got shape.
//
// Supported element types are float32, float64, float16 and uint8 (used as
// stored: no scaling to [0, 1]); everything is converted to float64.
// Fortran-ordered .npy arrays are read correctly; big-endian arrays too.
// NaN and Inf are rejected, naming the file and the sample (row) index in
// that file. [Open] makes one streaming validation pass over the selected
// samples so that bad data is reported before any analysis starts.
//
// # Streaming
//
// A .npy file is never loaded whole: [Open] reads its header, and each batch
// is read from the data region with ReadAt and converted on its own. An .npz
// member is a compressed stream, so its raw bytes are loaded once (in the
// stored dtype), but they are still converted to float64 one batch at a
// time. [Source.Batches] can be ranged over any number of times;
// [Source.ReadBatch] gives random access.
//
// # Holdout
//
// [Source.Split] divides the samples into a calibration part and a holdout
// part. With seed 0 the holdout is the last floor(frac*N) samples; with any
// other seed it is a deterministic pseudo-random subset of that size (the
// same for the same seed, N and frac on every platform and Go version). Both
// parts keep file order.
//
// # Labels
//
// [LoadLabels] and [Source.LoadLabels] read class indices (any integer
// dtype, one per sample) or float targets ([N] or [N, ...]). The method
// checks the count against the data files, naming both, and returns the
// labels of the Source's own samples, so they follow Options.Limit and
// Split.
//
// # Errors
//
// Every problem with a user file is a [*DataError] whose message is
// "FILE: problem", suitable for printing as is before exiting with status 2.
//
// # Writing
//
// [SaveNpy] writes a float64 array as .npy (float32 or float64 on disk)
// atomically: a temporary file in the destination folder is written, synced
// and renamed over the destination.
package calib
