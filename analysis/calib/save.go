package calib

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/ecprune/ecprune/internal/plain"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"codeberg.org/sbinet/npyio/npy"
)

// SaveNpy writes data (row-major, the given shape) to path as a C-order
// .npy array of float32 (asFloat32) or float64. The file is written to a
// temporary file in the same folder, synced and renamed over path, so
// readers never see a partial file. Errors are *DataError naming path.
func SaveNpy(path string, data []float64, shape []int, asFloat32 bool) error {
	n, ok := numElems(shape)
	if !ok {
		return dataErrf(path, "cannot save: bad shape %s", plain.Shape(shape))
	}
	if n != len(data) {
		return dataErrf(path, "cannot save: shape %s needs %d values, got %d", plain.Shape(shape), n, len(data))
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return dataErr(path, err, "cannot create temporary file")
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<16)
	if err := writeNpy(w, data, shape, asFloat32); err != nil {
		return dataErr(path, err, "cannot write")
	}
	if err := w.Flush(); err != nil {
		return dataErr(path, err, "cannot write")
	}
	if err := f.Sync(); err != nil {
		return dataErr(path, err, "cannot sync")
	}
	if err := f.Close(); err != nil {
		return dataErr(path, err, "cannot close")
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return dataErr(path, err, "cannot set permissions")
	}
	if err := os.Rename(tmp, path); err != nil {
		return dataErr(path, err, "cannot rename temporary file")
	}
	done = true
	// Make the rename durable; not all platforms can sync a directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// writeNpy writes the array with npyio; the shape is conveyed by nesting
// slices, one level per axis. npyio cannot describe arrays with a zero-length
// axis (it drops such axes from the header), so those get a header written
// here (there is no data to write).
func writeNpy(w io.Writer, data []float64, shape []int, asFloat32 bool) error {
	for _, d := range shape {
		if d == 0 {
			return writeEmptyNpy(w, shape, asFloat32)
		}
	}
	var flat reflect.Value
	if asFloat32 {
		f := make([]float32, len(data))
		for i, v := range data {
			f[i] = float32(v)
		}
		flat = reflect.ValueOf(f)
	} else {
		flat = reflect.ValueOf(data)
	}
	if len(shape) == 0 {
		return npy.Write(w, flat.Index(0).Interface())
	}
	return npy.Write(w, nest(flat, shape).Interface())
}

// nest turns a flat slice into nested slices of the given shape (sharing
// the flat backing array).
func nest(flat reflect.Value, shape []int) reflect.Value {
	if len(shape) == 1 {
		return flat
	}
	inner, _ := numElems(shape[1:])
	typ := flat.Type()
	for range shape[1:] {
		typ = reflect.SliceOf(typ)
	}
	out := reflect.MakeSlice(typ, shape[0], shape[0])
	for i := range shape[0] {
		out.Index(i).Set(nest(flat.Slice(i*inner, (i+1)*inner), shape[1:]))
	}
	return out
}

func writeEmptyNpy(w io.Writer, shape []int, asFloat32 bool) error {
	descr := "<f8"
	if asFloat32 {
		descr = "<f4"
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	sh := "(" + strings.Join(dims, ", ") + ")"
	if len(shape) == 1 {
		sh = "(" + dims[0] + ",)"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, sh)
	// Version 1.0: magic, 2 version bytes, uint16 length; pad to 64 bytes.
	total := len(npyMagic) + 4 + len(dict) + 1
	pad := (64 - total%64) % 64
	var b bytes.Buffer
	b.Write(npyMagic)
	b.Write([]byte{1, 0})
	binary.Write(&b, binary.LittleEndian, uint16(len(dict)+pad+1))
	b.WriteString(dict)
	b.WriteString(strings.Repeat(" ", pad))
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// WriteNpy writes data (row-major, the given shape) to w as a C-order .npy
// array of float32 (asFloat32) or float64, for callers that place the file
// themselves.
func WriteNpy(w io.Writer, data []float64, shape []int, asFloat32 bool) error {
	n, ok := numElems(shape)
	if !ok || n != len(data) {
		return fmt.Errorf("cannot save: shape %s for %d values", plain.Shape(shape), len(data))
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	if err := writeNpy(bw, data, shape, asFloat32); err != nil {
		return err
	}
	return bw.Flush()
}
