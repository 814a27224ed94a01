package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// TestJSONOutputOfEveryCommand runs every command with --json (and
// --verbose, so that there are log lines to misplace) and checks that
// stdout is exactly one JSON document with the command's main field.
func TestJSONOutputOfEveryCommand(t *testing.T) {
	dir := t.TempDir()
	pde := tdModel("pde_mlp.onnx")
	x, y := tdData("pde_calib_x.npy"), tdData("pde_calib_y.npy")
	pruned := filepath.Join(dir, "pruned.onnx")
	// In order: report reads what prune writes.
	for _, tc := range []struct {
		name string
		args []string
		key  string
	}{
		{"version", []string{"version"}, "version"},
		{"inspect", []string{"inspect", pde}, "layers"},
		{"eval", []string{"eval", pde, "--data", x, "--labels", y}, "quality"},
		{"prune", []string{"prune", pde, "-o", pruned, "--calib", x, "--sparsity", "0.7"}, "removed"},
		{"report", []string{"report", pde, pruned, "--data", x, "--labels", y}, "size_after"},
		{"sweep", []string{"sweep", pde, "--calib", x, "--test", tdData("pde_test_x.npy"), "--test-labels", tdData("pde_test_y.npy"),
			"--methods", "ec,magnitude", "--sparsities", "0.5,0.9"}, "points"},
		{"help", []string{"help"}, "commands"},
		{"help prune", []string{"help", "prune"}, "flags"},
		{"sweep --help", []string{"sweep", "--help"}, "flags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := cliRun(t, append(tc.args, "--json", "--verbose")...)
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			var doc map[string]any
			decodeOne(t, out, &doc)
			if _, ok := doc[tc.key]; !ok {
				t.Errorf("JSON has no %q field: %s", tc.key, out)
			}
		})
	}
}

// jsonError is the --json error document.
type jsonError struct {
	Error *struct {
		Message  string `json:"message"`
		Kind     string `json:"kind"`
		ExitCode int    `json:"exit_code"`
		Command  string `json:"command"`
	} `json:"error"`
}

// TestJSONErrors: a failing command with --json still prints one JSON
// document, {"error": {...}}, with the exit status in it, and the message
// on stderr too.
func TestJSONErrors(t *testing.T) {
	pde := tdModel("pde_mlp.onnx")
	x := tdData("pde_calib_x.npy")
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown command", []string{"bogus"}, exitBad, "unknown command"},
		{"unknown flag before --json", []string{"inspect", "--bogus", pde}, exitBad, "unknown flag"},
		{"missing argument", []string{"inspect"}, exitBad, "one model"},
		{"missing model file", []string{"inspect", filepath.Join(t.TempDir(), "none.onnx")}, exitBad, "cannot read"},
		{"not a model", []string{"inspect", x}, exitBad, "not an ONNX model"},
		{"data of the wrong shape", []string{"eval", pde, "--data", tdData("mnist_calib_x.npy")}, exitBad, "shape"},
		{"labels of the wrong count", []string{"eval", pde, "--data", x, "--labels", tdData("pde_test_y.npy")}, exitBad, "labels"},
		{"required flag missing", []string{"prune", pde, "--calib", x}, exitBad, "-o OUT is required"},
		{"bad --progress", []string{"version", "--progress", "sometimes"}, exitBad, "--progress"},
		{"bad flag value", []string{"prune", pde, "-o", "x.onnx", "--calib", x, "--sparsity", "lots"}, exitBad, "sparsity"},
		{"exact over its budget", []string{"prune", pde, "-o", filepath.Join(t.TempDir(), "p.onnx"), "--calib", x, "--method", "exact", "--exact-budget", "1ns"}, exitBad, "budget"},
		{"help of an unknown command", []string{"help", "bogus"}, exitBad, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := cliRun(t, append(tc.args, "--json")...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errs)
			}
			var doc jsonError
			decodeOne(t, out, &doc)
			if doc.Error == nil || doc.Error.ExitCode != tc.code || doc.Error.Message == "" || !strings.Contains(doc.Error.Message, tc.msg) {
				t.Fatalf("error document %s: want exit_code %d and a message containing %q", out, tc.code, tc.msg)
			}
			if want := map[int]string{exitBad: "bad_input", exitError: "error"}[tc.code]; doc.Error.Kind != want {
				t.Errorf("kind %q, want %q", doc.Error.Kind, want)
			}
			if !strings.Contains(errs, doc.Error.Message) {
				t.Errorf("stderr does not carry the message %q:\n%s", doc.Error.Message, errs)
			}
		})
	}
}

// failingWriter fails every write, like a closed stdout.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestExitCodes: 0 success, 2 bad input or usage, 1 anything else.
func TestExitCodes(t *testing.T) {
	pde := tdModel("pde_mlp.onnx")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"no arguments", nil, exitBad},
		{"help", []string{"help"}, exitOK},
		{"--help", []string{"--help"}, exitOK},
		{"-h", []string{"-h"}, exitOK},
		{"command help", []string{"eval", "-h"}, exitOK},
		{"version", []string{"version"}, exitOK},
		{"--version", []string{"--version"}, exitOK},
		{"inspect", []string{"inspect", pde}, exitOK},
		{"extra argument", []string{"inspect", pde, pde}, exitBad},
		{"--json=FILE", []string{"inspect", pde, "--json=" + filepath.Join(dir, "i.json")}, exitOK},
		{"--json=FILE in a missing folder", []string{"inspect", pde, "--json=" + filepath.Join(dir, "no", "i.json")}, exitBad},
		{"--json=FILE a folder", []string{"inspect", pde, "--json=" + dir}, exitBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, errs := cliRun(t, tc.args...); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, errs)
			}
		})
	}
	// A failure that is not the input's fault: stdout cannot be written.
	var errb bytes.Buffer
	if code := run([]string{"version", "--json"}, failingWriter{}, &errb); code != exitError {
		t.Errorf("unwritable stdout: exit %d, want %d (%s)", code, exitError, errb.String())
	}
	if !strings.Contains(errb.String(), "broken pipe") {
		t.Errorf("stderr should name the write error: %q", errb.String())
	}
	// --json=FILE: the JSON goes to the file, the text to stdout.
	b, err := os.ReadFile(filepath.Join(dir, "i.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	decodeOne(t, string(b), &doc)
	if doc["layers"] == nil {
		t.Errorf("--json=FILE holds %s", b)
	}
}

// flagLine matches the first line of a flag's entry in help.
var flagLine = regexp.MustCompile(`^\s+(-\w, )?--[\w-]+`)

// flagEntry returns a flag's whole entry in help text (wrapped lines
// joined, spaces normalised), or "".
func flagEntry(help, name string) string {
	lines := strings.Split(help, "\n")
	start := regexp.MustCompile(`^\s+(-\w, )?--` + regexp.QuoteMeta(name) + `(\s|\[|$)`)
	for i, l := range lines {
		if !start.MatchString(l) {
			continue
		}
		entry := []string{l}
		for _, m := range lines[i+1:] {
			if strings.TrimSpace(m) == "" || flagLine.MatchString(m) {
				break
			}
			entry = append(entry, m)
		}
		return strings.Join(strings.Fields(strings.Join(entry, " ")), " ")
	}
	return ""
}

// TestHelpListsEveryFlagWithDefault: `ecprune CMD --help` and `ecprune
// help CMD` print the same text, with the purpose, the examples and every
// flag with its default.
func TestHelpListsEveryFlagWithDefault(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	if !slices.Contains(names, "sweep") {
		t.Fatalf("no sweep command among %v", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			c := commands[name]
			code, help, errs := cliRun(t, name, "--help")
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			if _, h2, _ := cliRun(t, "help", name); h2 != help {
				t.Errorf("'help %s' and '%s --help' differ", name, name)
			}
			for _, want := range append([]string{c.summary, "Usage: ecprune " + name}, c.examples...) {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %q", want)
				}
			}
			if name != "version" && len(c.examples) == 0 {
				t.Errorf("no examples")
			}
			doc := helpOf(c)
			if len(doc.Flags) < 5 {
				t.Fatalf("only %d flags listed", len(doc.Flags))
			}
			for _, f := range doc.Flags {
				entry := flagEntry(help, f.Name)
				if entry == "" {
					t.Errorf("--%s is not listed", f.Name)
					continue
				}
				if strings.Contains(f.Usage, "default:") || strings.Contains(f.Usage, "required") {
					continue // the usage says it in words
				}
				def := f.Default
				if def == "" || def == "[]" {
					def = "none"
				}
				if !strings.Contains(entry, "(default "+def+")") {
					t.Errorf("--%s: entry %q does not give its default %q", f.Name, entry, def)
				}
			}
		})
	}
	code, help, _ := cliRun(t, "help")
	if code != exitOK {
		t.Fatalf("help: exit %d", code)
	}
	for _, n := range names {
		if !regexp.MustCompile(`(?m)^\s+` + n + `\s+\S`).MatchString(help) {
			t.Errorf("'ecprune help' does not list %s with its purpose", n)
		}
	}
	for _, f := range []string{"json", "quiet", "verbose", "progress", "help"} {
		if e := flagEntry(help, f); !strings.Contains(e, "(default ") {
			t.Errorf("'ecprune help' lists --%s as %q, without its default", f, e)
		}
	}
	for _, want := range []string{"Examples:", "Exit status: 0 success, 2 bad input or usage, 1"} {
		if !strings.Contains(help, want) {
			t.Errorf("'ecprune help' lacks %q", want)
		}
	}
}

// TestProgressLogLines: without a terminal, progress is a plain log line
// at most every 5 seconds, and nothing at all with --quiet or --progress
// never.
func TestProgressLogLines(t *testing.T) {
	for _, tc := range []struct {
		name     string
		e        env
		lines    int
		contains string
	}{
		{"auto, not a terminal", env{progress: "auto"}, 1, "ecprune: analysis: 5/10 (50%) after"},
		{"quiet", env{progress: "auto", quiet: true}, 0, ""},
		{"never", env{progress: "never"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := tc.e
			e.stderr = &buf
			p := e.newProgress("analysis", 10)
			p.last = time.Now().Add(-6 * time.Second) // due
			p.set(5, 10)
			p.set(6, 10) // too soon after the first line
			p.finish()
			got := buf.String()
			if n := strings.Count(got, "\n"); n != tc.lines || !strings.Contains(got, tc.contains) {
				t.Errorf("%d lines %q, want %d containing %q", n, got, tc.lines, tc.contains)
			}
			if strings.ContainsAny(got, "\r\x1b") {
				t.Errorf("control characters in %q", got)
			}
		})
	}
}

// binary builds ecprune for a test that needs a real process: whether
// the bar shows depends on stderr's file descriptor, which cannot be faked
// in-process.
func binary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build the binary: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ecprune")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// barRE matches a progress bar: label, percentage, the bar, and the rate
// and time left that progressbar prints.
var barRE = regexp.MustCompile(`(analysis|sweep)\s+\d+%\s+\|[^|]*\|\s+\(\d+/\d+, [\d.]+ (samples|points)/(s|min|hr)\)\s+\[\d+s:\d+s\]`)

// TestProgressBar runs a sweep with stderr on a pseudo-terminal and on a
// pipe: a bar with rate and time left on the terminal; on a pipe, plain
// log lines without control characters.
func TestProgressBar(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := binary(t)
	pde := tdModel("pde_mlp.onnx")
	args := []string{"sweep", pde, "--calib", tdData("pde_calib_x.npy"), "--batch", "100", "--test", tdData("pde_test_x.npy"),
		"--methods", "ec,magnitude", "--sparsities", "0.3,0.6,0.9"}
	for _, tc := range []struct {
		name     string
		terminal bool
		flags    []string
		bar      bool
		empty    bool
	}{
		{"terminal", true, nil, true, false},
		{"terminal, --progress never", true, []string{"--progress", "never"}, false, false},
		{"terminal, --quiet", true, []string{"--quiet"}, false, true},
		{"pipe", false, nil, false, false},
		{"pipe, --progress always", false, []string{"--progress", "always"}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(slices.Clone(args), tc.flags...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout = &stdout
			if tc.terminal {
				ptmx, tty, err := pty.Open()
				if err != nil {
					t.Skipf("no pseudo-terminal: %v", err)
				}
				defer ptmx.Close()
				// Raw mode: no \n -> \r\n translation, so a \r in the
				// output is the bar's.
				if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
					t.Fatal(err)
				}
				cmd.Stderr = tty
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				tty.Close() // the child holds its own copy
				done := make(chan struct{})
				go func() {
					io.Copy(&stderr, ptmx) // ends with EIO once the child has exited
					close(done)
				}()
				err = cmd.Wait()
				<-done
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr.String())
				}
			} else {
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("%v\n%s", err, stderr.String())
				}
			}
			got := stderr.String()
			if !strings.Contains(stdout.String(), "statistics computed once") {
				t.Errorf("stdout lacks the results table:\n%s", stdout.String())
			}
			if tc.empty {
				if got != "" {
					t.Errorf("--quiet, yet stderr is %q", got)
				}
				return
			}
			if !strings.Contains(got, "computed once") {
				t.Errorf("stderr lacks the log lines:\n%q", got)
			}
			if hasBar := barRE.MatchString(got); hasBar != tc.bar {
				t.Errorf("bar shown: %v, want %v:\n%q", hasBar, tc.bar, got)
			}
			if tc.bar {
				if !strings.Contains(got, "\r") {
					t.Errorf("the bar does not redraw its line (no \\r):\n%q", got)
				}
				return
			}
			for i, c := range []byte(got) {
				if (c < 0x20 && c != '\n' && c != '\t') || c == 0x1b {
					t.Fatalf("control character %#x at byte %d of stderr:\n%q", c, i, got)
				}
			}
		})
	}
}
