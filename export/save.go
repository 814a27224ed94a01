package export

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ecprune/ecprune/onnxio"
)

// Save writes m (the result of Apply, whose Path is the source model) to
// out, atomically. threshold > 0 moves every tensor of at least that many
// bytes into out+".data" (repacking external tensors there too); 0 keeps
// the layout, copying untouched external tensors to their locations
// beside out.
//
// It refuses to write over the source model file or any of its external
// data files, by name or through another link (os.SameFile): a pruned
// model saved over its source would leave the user with nothing to compare
// against, and an external data file rewritten in place would corrupt the
// source. Problems with the output path are *onnxio.BadInputError values.
func Save(m *onnxio.Model, out string, threshold int64) error {
	return SaveStaged(m, out, threshold, nil)
}

// SaveStaged is Save whose files st holds until the caller commits them
// (nil: written in place at once).
func SaveStaged(m *onnxio.Model, out string, threshold int64, st *onnxio.Stage) error {
	if out == "" {
		return &onnxio.BadInputError{File: out, Msg: "no output path given"}
	}
	if threshold < 0 {
		return fmt.Errorf("saving %s: negative external data threshold %d", out, threshold)
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return &onnxio.BadInputError{File: out, Msg: "is a folder, not a file name"}
	}
	dir := filepath.Dir(out)
	if err := checkWritable(dir); err != nil {
		return &onnxio.BadInputError{File: out, Msg: err.Error()}
	}

	// Files Save will write, and the source's files it must not touch.
	targets := []string{out}
	if threshold > 0 {
		targets = append(targets, filepath.Join(dir, filepath.Base(out)+".data"))
	} else {
		for _, loc := range m.ExternalLocations() {
			targets = append(targets, filepath.Join(dir, loc))
		}
	}
	protected := []string{m.Path}
	locs := m.ExternalLocations()
	// Tensors Apply changed no longer refer to their external files, so
	// the source file says which ones it had.
	if l, err := onnxio.FileExternalLocations(m.Path, false); err == nil {
		locs = append(locs, l...)
	}
	for _, loc := range locs {
		protected = append(protected, filepath.Join(m.Dir, loc))
	}
	for _, t := range targets {
		for _, p := range protected {
			if onnxio.SameFile(t, p) {
				what := "the input model"
				if p != m.Path {
					what = "external data file " + p + " of the input model " + m.Path
				}
				msg := "would overwrite " + what + "; choose another output file name"
				if t != out && threshold == 0 {
					msg = "would overwrite " + what + " (the pruned model keeps its external data layout); write to another folder or save with an external data threshold"
				}
				return &onnxio.BadInputError{File: out, Msg: msg}
			}
		}
	}
	if err := m.Save(out, onnxio.SaveOptions{ExternalThreshold: threshold, Stage: st}); err != nil {
		return fmt.Errorf("saving the pruned model: %w", err)
	}
	return nil
}

// checkWritable verifies that a file can be created in dir, so a bad
// output path is reported before any work is written.
func checkWritable(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("output folder %s: %v", dir, unwrapPath(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("output folder %s is not a folder", dir)
	}
	f, err := os.CreateTemp(dir, ".ecprune-probe*")
	if err != nil {
		return fmt.Errorf("output folder %s is not writable: %v", dir, unwrapPath(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
