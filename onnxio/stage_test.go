package onnxio

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// TestStageCommitAndAbort: committed files are in place and nothing else
// is; an aborted stage leaves neither its files nor the folders it made.
func TestStageCommitAndAbort(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit bool
		want   []string
	}{
		{"commit", true, []string{"a", "a/b", "a/b/x.onnx", "a/b/y.onnx"}},
		{"abort", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			var s Stage
			dir := filepath.Join(base, "a", "b")
			if err := s.MkdirAll(dir); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"x.onnx", "y.onnx", "x.onnx"} {
				if err := s.WriteFile(filepath.Join(dir, n), []byte(n)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.commit {
				if err := s.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				s.Abort()
				if err := s.WriteFile(filepath.Join(base, "late"), nil); err == nil {
					t.Error("a write after Abort succeeded")
				}
				if err := s.MkdirAll(filepath.Join(base, "late")); err == nil {
					t.Error("a folder made after Abort")
				}
			}
			if got := tree(t, base); !slices.Equal(got, tc.want) {
				t.Errorf("left %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStageAbortRace: an Abort arriving at any moment of a run that makes
// folders and writes files (as a signal does) leaves nothing behind.
func TestStageAbortRace(t *testing.T) {
	for i := 0; i < 200; i++ {
		base := t.TempDir()
		var s Stage
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(base, "models", "sub")
			if s.MkdirAll(dir) != nil {
				return
			}
			for k := 0; k < 20; k++ {
				if s.WriteFile(filepath.Join(dir, "m.onnx"), make([]byte, 64)) != nil {
					return
				}
			}
		}()
		for k := 0; k < i%7; k++ {
			runtime.Gosched()
		}
		s.Abort()
		wg.Wait()
		if got := tree(t, base); len(got) != 0 {
			t.Fatalf("run %d: left %v", i, got)
		}
	}
}

func tree(t *testing.T, base string) []string {
	t.Helper()
	var got []string
	err := filepath.Walk(base, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p != base {
			r, _ := filepath.Rel(base, p)
			got = append(got, filepath.ToSlash(r))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
