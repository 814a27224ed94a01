// Package onnxtestdata reads the ONNX backend node tests (one small model per
// operator case, with input and expected output tensors), as Debian's
// libonnx-testdata installs them, so that ecprune's ONNX reading and
// evaluation can be checked against the vectors of the standard itself.
//
// Require skips a test when the data is missing, except under CI=true, where
// it fails the test instead (scripts/setup-deps.sh installs the package).
package onnxtestdata
