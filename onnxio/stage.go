package onnxio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Stage holds the files one run writes until all of them are complete:
// each is written to a temporary file beside its target and synced, and
// Commit renames them all into place, so that a run that fails on its
// last output leaves none of the others behind. Abort (also safe from a
// signal handler's goroutine) removes whatever is staged. The zero value
// is ready to use.
type Stage struct {
	mu      sync.Mutex
	files   []staged
	dirs    []string // folders the run created, removed on Abort if empty
	onAbort []func()
	aborted bool
}

type staged struct{ target, temp string }

// Write stages path's content.
func (s *Stage) Write(path string, write func(io.Writer) error) (err error) {
	f, err := s.create(path)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			s.drop(path)
		}
	}()
	if err = write(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// WriteFile stages path with data.
func (s *Stage) WriteFile(path string, data []byte) error {
	return s.Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// MkdirAll creates a folder now (the staged files need it) and remembers
// the folders it made, for Abort. It holds the lock while it creates them
// so that an Abort from a signal cannot fall between making a folder and
// recording it.
func (s *Stage) MkdirAll(dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return errors.New("interrupted")
	}
	made, err := mkdirs(dir)
	s.dirs = append(s.dirs, made...)
	return err
}

// Temp is the temporary file that holds path's staged content.
func (s *Stage) Temp(path string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if f.target == path {
			return f.temp, true
		}
	}
	return "", false
}

// create makes path's temporary file and records it, under the lock: an
// Abort (from a signal) then either comes first and the file is never
// made, or comes after and removes it, before it removes the folders.
func (s *Stage) create(path string) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return nil, errors.New("interrupted")
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("cannot write in %s: %w", dir, unwrapPath(err))
	}
	// A second write to the same target replaces the first.
	for i, g := range s.files {
		if g.target == path {
			os.Remove(g.temp)
			s.files = append(s.files[:i], s.files[i+1:]...)
			break
		}
	}
	s.files = append(s.files, staged{path, f.Name()})
	return f, nil
}

func (s *Stage) drop(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.files {
		if f.target == target {
			os.Remove(f.temp)
			s.files = append(s.files[:i], s.files[i+1:]...)
			return
		}
	}
}

// Commit renames every staged file into place, in the order staged. If a
// rename fails, the files already renamed are removed again.
func (s *Stage) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.files {
		if err := os.Rename(f.temp, f.target); err != nil {
			for _, g := range s.files[:i] {
				os.Remove(g.target)
			}
			for _, g := range s.files[i:] {
				os.Remove(g.temp)
			}
			s.files = nil
			return fmt.Errorf("writing %s: %w", f.target, unwrapPath(err))
		}
	}
	s.files, s.dirs = nil, nil
	return nil
}

// OnAbort adds a clean-up Abort runs (a temporary folder of the caller's).
func (s *Stage) OnAbort(f func()) {
	s.mu.Lock()
	s.onAbort = append(s.onAbort, f)
	s.mu.Unlock()
}

// Abort removes every staged file and the folders the run created, and
// makes later writes fail.
func (s *Stage) Abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
	for _, f := range s.files {
		os.Remove(f.temp)
	}
	s.files = nil
	for i := len(s.dirs) - 1; i >= 0; i-- {
		os.Remove(s.dirs[i]) // only if empty
	}
	s.dirs = nil
	for _, f := range s.onAbort {
		f()
	}
	s.onAbort = nil
}
