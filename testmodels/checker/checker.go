package checker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/testmodels"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Python is the interpreter used: Debian's, which python3-onnx installs
// into (a python3 earlier on PATH may lack onnx).
const Python = "/usr/bin/python3"

// ErrUnavailable is returned (wrapped) when Python or its onnx package is
// missing, so no check could be made.
var ErrUnavailable = errors.New("onnx checker unavailable")

// timeout bounds one checker run; importing onnx takes well under a second.
const timeout = 2 * time.Minute

// script checks the model at argv[1], with full_check when argv[2] is "1".
// Exit status 3 means onnx could not be imported; 1 that the check failed.
const script = `
import sys
try:
    import onnx
    import onnx.checker
except Exception as e:
    sys.stderr.write("cannot import onnx: %s\n" % e)
    sys.exit(3)
try:
    onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=(sys.argv[2] == "1"))
except Exception as e:
    sys.stderr.write("%s: %s\n" % (type(e).__name__, e))
    sys.exit(1)
`

// CheckErr runs onnx.checker.check_model on the model file, with
// full_check (strict shape inference) when fullCheck is set. It returns nil
// for a valid model, an error holding the checker's message for an invalid
// one, and an error wrapping ErrUnavailable when no check could be run.
func CheckErr(modelPath string, fullCheck bool) error {
	if _, err := os.Stat(modelPath); err != nil {
		return fmt.Errorf("checking %s: %w", modelPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := "0"
	if fullCheck {
		full = "1"
	}
	cmd := exec.CommandContext(ctx, Python, "-c", script, modelPath, full)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return fmt.Errorf("onnx.checker rejects %s (full_check=%v): %s", modelPath, fullCheck, msg)
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		return fmt.Errorf("%w: %s: %s (install python3-onnx)", ErrUnavailable, Python, msg)
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %v (install python3-onnx)", ErrUnavailable, err)
	default:
		return fmt.Errorf("running onnx.checker on %s: %w: %s", modelPath, err, msg)
	}
}

var (
	availOnce sync.Once
	availErr  error
)

// available reports, once per process, whether Python can import onnx.
func available() error {
	availOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, Python, "-c", "import onnx.checker").CombinedOutput()
		if err != nil {
			availErr = fmt.Errorf("%w: %s cannot import onnx: %v: %s (install python3-onnx)",
				ErrUnavailable, Python, err, strings.TrimSpace(string(out)))
		}
	})
	return availErr
}

// Require stops the test unless the checker can run: it skips it locally and
// fails it when $CI is true.
func Require(t testing.TB) {
	t.Helper()
	testmodels.RequireTool(t, "ONNX checker", available())
}

// Check fails the test unless onnx.checker.check_model accepts the model
// (with full_check when fullCheck is set), reporting the checker's message.
// Without the checker it behaves as Require.
func Check(t testing.TB, modelPath string, fullCheck bool) {
	t.Helper()
	Require(t)
	if err := CheckErr(modelPath, fullCheck); err != nil {
		t.Fatal(err)
	}
}
