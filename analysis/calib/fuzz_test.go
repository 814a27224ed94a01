package calib

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzData is the body of the data-file fuzz targets: whatever the bytes,
// opening them as ext (".npy", ".npz", ".pb") for a [?, 2, 3] input and
// reading every sample, then as labels, ends in data or a *DataError: no
// panic, no hang, no allocation beyond what the file's size allows.
func fuzzData(t *testing.T, dir, ext string, data []byte) {
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%d bytes took %s", len(data), d)
		}
	}()
	p := filepath.Join(dir, "f"+ext)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	isData := func(err error) {
		t.Helper()
		var de *DataError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("error %v (%T) is not a *DataError", err, err)
		}
	}
	src, err := Open([]string{p}, []InputSpec{spec("x", -1, 2, 3)}, Options{Batch: 4, Limit: 64})
	isData(err)
	if err == nil {
		for _, err := range src.Batches() {
			if err != nil {
				break
			}
		}
		src.Close()
	}
	_, err = LoadLabels(p, -1)
	isData(err)
}

func fuzzSeeds(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(td(n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
}

func FuzzNpyFile(f *testing.F) {
	fuzzSeeds(f, "f4.npy", "f8_fortran_2d.npy", "u1_labels.npy", "i8_labels.npy")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { fuzzData(t, dir, ".npy", data) })
}

func FuzzNpzFile(f *testing.F) {
	fuzzSeeds(f, "one.npz", "multi.npz", "multi_c.npz")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { fuzzData(t, dir, ".npz", data) })
}

func FuzzPbFile(f *testing.F) {
	f.Add([]byte("\x08\x02\x08\x02\x08\x03\x10\x01\x4a\x30" + string(make([]byte, 48))))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { fuzzData(t, dir, ".pb", data) })
}
