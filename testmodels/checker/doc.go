// Package checker validates ONNX files with the reference checker,
// onnx.checker.check_model from the ONNX Python package, so that tests can
// assert that the models ecprune writes are valid ONNX by the standard's own
// rules, not just loadable by our decoder or by one runtime.
//
// It runs /usr/bin/python3 (Debian's python3-onnx, installed by
// scripts/setup-deps.sh) as one long-lived process per test binary that
// checks one model per request: importing onnx costs far more than
// checking a test model, and the CLI tests check hundreds of outputs. Check skips a test when that Python lacks onnx,
// except under CI=true, where it fails the test instead.
package checker
