package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ecprune/ecprune/onnxio"
)

// fileRef is a file a run reads or writes and what named it ("the model",
// "--calib", "-o", ...), for messages.
type fileRef struct{ what, path string }

// refs names each non-empty path with what.
func refs(what string, paths ...string) []fileRef {
	var out []fileRef
	for _, p := range paths {
		if p != "" {
			out = append(out, fileRef{what, p})
		}
	}
	return out
}

// checkFiles refuses, before any work, outputs that would overwrite a file
// the run reads or another output of the run (same path, or the same file
// through a link: os.SameFile), outputs that are folders, pipes or devices,
// and outputs whose folder is missing or not writable.
func checkFiles(inputs, outputs []fileRef) error {
	for i, o := range outputs {
		if err := checkOutput(o); err != nil {
			return err
		}
		for _, in := range inputs {
			if onnxio.SameFile(o.path, in.path) {
				return &onnxio.BadInputError{File: o.path, Msg: o.what + " is " + describe(in) + ", which this run reads: refusing to overwrite it (choose another file name)"}
			}
		}
		for _, p := range outputs[:i] {
			if onnxio.SameFile(o.path, p.path) {
				return &onnxio.BadInputError{File: o.path, Msg: o.what + " and " + p.what + " name the same file: choose two file names"}
			}
		}
	}
	return nil
}

func describe(f fileRef) string {
	if f.what == "the model" || f.what == "a model" {
		return "the input model " + f.path
	}
	return f.what + " " + f.path
}

// checkOutput checks one output path on its own.
func checkOutput(o fileRef) error {
	bad := func(msg string) error { return &onnxio.BadInputError{File: o.path, Msg: o.what + ": " + msg} }
	if st, err := os.Stat(o.path); err == nil {
		if st.IsDir() {
			return bad("is a folder, not a file name")
		}
		if !st.Mode().IsRegular() {
			return bad("exists and is not a regular file (a device or pipe?): refusing to replace it")
		}
	}
	dir := filepath.Dir(o.path)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return bad("the folder " + dir + " does not exist")
	}
	tmp, err := os.CreateTemp(dir, ".ecprune-probe-*")
	if err != nil {
		return bad("cannot write in the folder " + dir)
	}
	tmp.Close()
	os.Remove(tmp.Name())
	return nil
}

// checkModelFiles checks the outputs against what a loaded model reads
// besides its own file: its external data files.
func (e *env) checkModelFiles(m *onnxio.Model) error {
	ins := refs("the model", m.Path)
	for _, f := range m.ExternalFiles() {
		ins = append(ins, fileRef{"the external data file", f})
	}
	e.inputs = append(e.inputs, ins...)
	outs := e.outputs
	if e.derived != nil {
		outs = append(append([]fileRef{}, outs...), e.derived(m)...)
	}
	return checkFiles(e.inputs, outs)
}

// cleanUpOnSignal removes the run's staged files when SIGINT or SIGTERM
// arrives, and exits with 128+signal as a shell would report it. The
// returned function ends the watch.
func (e *env) cleanUpOnSignal(cmd string) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			e.interrupted.Store(true)
			e.stage.Abort()
			fmt.Fprintf(e.stderr, "ecprune %s: interrupted (%v): nothing written\n", cmd, s)
			code := 130
			if s == syscall.SIGTERM {
				code = 143
			}
			os.Exit(code)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}
