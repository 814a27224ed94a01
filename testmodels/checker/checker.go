package checker

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecprune/ecprune/testmodels"
)

// Python is the interpreter used: Debian's, which python3-onnx installs
// into (a python3 earlier on PATH may lack onnx).
const Python = "/usr/bin/python3"

// ErrUnavailable is returned (wrapped) when Python or its onnx package is
// missing, so no check could be made.
var ErrUnavailable = errors.New("onnx checker unavailable")

// timeout bounds one model's check, and the start of the process (importing
// onnx takes well under a second).
const timeout = 2 * time.Minute

// script is the checker process: it imports onnx once, answers "ready",
// then reads one JSON request a line, {"path": P, "full": B}, and answers
// one JSON line per request, {"ok": true} or {"ok": false, "error": MSG}.
// Importing onnx is most of a check's cost (about 0.3 s against a few
// milliseconds for a small model), so one process serves every check of a
// test binary. Exit status 3 means onnx could not be imported.
const script = `
import json, os, sys
# Answers go to a copy of stdout; anything else printed (warnings from
# onnx or C code) goes to stderr and cannot break the protocol.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
try:
    import onnx
    import onnx.checker
except Exception as e:
    sys.stderr.write("cannot import onnx: %s\n" % e)
    sys.exit(3)
out.write('{"ready": true}\n')
out.flush()
for line in sys.stdin:
    req = json.loads(line)
    try:
        onnx.checker.check_model(onnx.load(req["path"]), full_check=req["full"])
        ans = {"ok": True}
    except Exception as e:
        ans = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    out.write(json.dumps(ans) + "\n")
    out.flush()
`

// server is the long-lived checker process. Requests are serialised: the
// checker is single-threaded, and a test waits for its answer anyway.
type server struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	answer *bufio.Reader
	stderr *lockedBuffer
	// unavailable, once set, is returned for every later request: Python or
	// onnx is missing, and starting again would fail the same way.
	unavailable error
}

var srv server

// lockedBuffer collects the process's stderr, which the os/exec copier
// writes from its own goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}

type request struct {
	Path string `json:"path"`
	Full bool   `json:"full"`
}

type reply struct {
	Ready bool   `json:"ready"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// start runs the process and waits for its "ready" line. Called with s.mu
// held.
func (s *server) start() error {
	cmd := exec.Command(Python, "-c", script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("starting onnx.checker: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("starting onnx.checker: %w", err)
	}
	s.stderr = &lockedBuffer{}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			s.unavailable = fmt.Errorf("%w: %v (install python3-onnx)", ErrUnavailable, err)
			return s.unavailable
		}
		return fmt.Errorf("starting onnx.checker: %w", err)
	}
	s.cmd, s.stdin, s.answer = cmd, stdin, bufio.NewReader(stdout)
	r, err := s.read()
	if err == nil && !r.Ready {
		err = fmt.Errorf("unexpected first line %+v", r)
	}
	if err != nil {
		state := s.stop()
		if state != nil && state.ExitCode() == 3 {
			s.unavailable = fmt.Errorf("%w: %s: %s (install python3-onnx)", ErrUnavailable, Python, s.stderr)
			return s.unavailable
		}
		return fmt.Errorf("starting onnx.checker: %w: %s", err, s.stderr)
	}
	return nil
}

// read reads one answer line, giving up after timeout (the process is then
// killed, which ends the read).
func (s *server) read() (reply, error) {
	timer := time.AfterFunc(timeout, func() { s.cmd.Process.Kill() })
	line, err := s.answer.ReadBytes('\n')
	if !timer.Stop() {
		return reply{}, fmt.Errorf("no answer within %v", timeout)
	}
	if err != nil {
		return reply{}, err
	}
	var r reply
	if err := json.Unmarshal(line, &r); err != nil {
		return reply{}, fmt.Errorf("answer %q: %w", line, err)
	}
	return r, nil
}

// stop ends the process and returns how it exited. Called with s.mu held.
func (s *server) stop() *os.ProcessState {
	if s.cmd == nil {
		return nil
	}
	s.stdin.Close()
	done := make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	state := s.cmd.ProcessState
	s.cmd = nil
	return state
}

// check sends one request, starting the process if none runs. A process
// that dies or hangs on a model is stopped and that model's check fails;
// the next check starts a new one.
func (s *server) check(path string, full bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unavailable != nil {
		return s.unavailable
	}
	if s.cmd == nil {
		if err := s.start(); err != nil {
			return err
		}
	}
	req, err := json.Marshal(request{Path: path, Full: full})
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if _, err := s.stdin.Write(append(req, '\n')); err != nil {
		s.stop()
		return fmt.Errorf("running onnx.checker on %s: %w: %s", path, err, s.stderr)
	}
	r, err := s.read()
	if err != nil {
		s.stop()
		return fmt.Errorf("running onnx.checker on %s: %w: %s", path, err, s.stderr)
	}
	if !r.OK {
		return fmt.Errorf("onnx.checker rejects %s (full_check=%v): %s", path, full, r.Error)
	}
	return nil
}

// CheckErr runs onnx.checker.check_model on the model file, with
// full_check (strict shape inference) when fullCheck is set. It returns nil
// for a valid model, an error holding the checker's message for an invalid
// one, and an error wrapping ErrUnavailable when no check could be run.
// Every call of a process goes to one long-lived Python process.
func CheckErr(modelPath string, fullCheck bool) error {
	if _, err := os.Stat(modelPath); err != nil {
		return fmt.Errorf("checking %s: %w", modelPath, err)
	}
	// The process keeps the working folder it started in.
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return fmt.Errorf("checking %s: %w", modelPath, err)
	}
	return srv.check(abs, fullCheck)
}

// available reports whether Python can import onnx, by starting the
// checker process that later checks use.
func available() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.unavailable != nil {
		return srv.unavailable
	}
	if srv.cmd != nil {
		return nil
	}
	return srv.start()
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
