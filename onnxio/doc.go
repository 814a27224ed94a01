// Package onnxio reads and writes ONNX models and extracts their dense
// network.
//
// It is the only package that knows the ONNX file format. Load keeps the
// model's protobuf exactly as it was read (unknown fields included), so a
// model saved without changes is proto.Equal to the input and untouched
// tensors keep their bytes. Extract turns the part of the graph that runs
// from the graph inputs to the outputs into a small intermediate form
// (Network): dense layers with W (out x in) and b, the ops between them,
// and for each layer where in the file its weight and bias live, so that a
// pruned layer can be written back in its original layout and element
// type. Extraction never guesses: what it cannot translate it reports, with
// the op and node at fault.
//
// Float32 weights stay float32 (Layer.W32), most often as a read-only view
// of the file's bytes: on a large model a float64 copy would take twice
// the file's size, and the analysis of a 42M-weight model must fit in six
// times it (see Layer).
package onnxio
