// Package plain formats values for messages that people read: error
// messages, warnings and log lines of every ecprune package.
//
// Go's %v prints a shape as [-1 784], an opset map as map[ai.onnx:13] and
// a list as [a b c]; those are Go's syntax, not the user's. A shape here
// reads "N x 784" (a dynamic batch axis named N, an unknown axis "?"), an
// opset list "ai.onnx 13, com.microsoft 1", a list "a, b, c".
//
// The helpers live in one internal package because the loader (onnxio),
// the evaluator (analysis), the data readers (analysis/calib), the
// selection (prune) and the writer (export) all print shapes and lists:
// one spelling for all of them, tested once.
package plain
