// Package export writes pruned dense layers back into the ONNX model they
// were extracted from.
//
// Pruning is only useful if the result is a model people can deploy, so the
// output must be the original model with as little changed as possible: the
// same op sequence, node names, graph inputs and outputs, doc strings and
// unknown fields, and every tensor that was not pruned kept byte for byte.
// Apply therefore edits a clone of the loaded protobuf in place instead of
// rebuilding a graph from the extracted network (the clone shares the raw
// bytes of the tensors it leaves alone, so a large model's weights are not
// copied; see onnxio.CloneSharingData): each weight goes back to
// the initializer it came from, in its stored layout ([out,in] or [in,out]),
// element type and storage field, divided by Gemm's alpha; each bias goes
// back divided by beta. Only what pruning needs is added: a bias for a
// layer that had none (a C input for Gemm, an Add after MatMul), a private
// copy of a bias that other nodes share, and the sparse encodings.
//
// A pruned weight can be stored three ways (the project notes on ONNX
// give the sources):
//
//   - dense: the same initializer with zeros written. Valid everywhere,
//     no smaller on disk (but it compresses well).
//   - constant: a Constant node whose sparse_value attribute holds the
//     non-zeros (linearised INT64 indices in packed int64_data, values in
//     raw_data). Needs opset >= 11 and IR >= 6; passes the checker's
//     full_check; ONNX Runtime densifies it when loading.
//   - sparse-initializer: GraphProto.sparse_initializer. Same encoding;
//     ONNX Runtime runs it but onnx's full_check (strict shape inference)
//     rejects it, so it is never chosen automatically.
//
// auto picks, per tensor, the smaller of dense and constant by encoded
// protobuf size, dense when the model is below opset 11 or IR 6. Sparse
// storage saves disk and transfer, not run-time memory: runtimes densify.
// An all-zero weight always stays dense (a sparse tensor needs at least one
// value).
//
// Below IR version 6 the sparse forms are invalid; export does not raise
// the IR version (that could silently change how other parts of the file
// are read) but refuses an explicit sparse request and makes auto choose
// dense.
//
// Pruned weights are written as +0.0: ONNX Runtime counts -0.0 as a
// non-zero, so values that round to zero in the element type are
// normalised before encoding.
//
// Save writes the result next to, never over, the input: the output model
// and its external data files may not be the input file or any of its
// external data files. Tensors Apply changed are inlined (raw_data);
// untouched external tensors stay external unless a size threshold repacks
// everything.
//
// Sizes and Counts give the figures a report needs: bytes on disk,
// gzip-compressed bytes (many pipelines ship compressed artefacts, and
// dense zeros compress well), and parameter and non-zero counts.
package export
