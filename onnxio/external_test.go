package onnxio

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// externalModel saves the small bundled model into dir with every tensor
// in the external file loc, and returns the model's path.
func externalModel(t *testing.T, dir, loc string) string {
	t.Helper()
	m, err := Load(bundledPath("pde_mlp.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "m.onnx")
	if err := m.Save(p, SaveOptions{ExternalThreshold: 1, ExternalName: loc}); err != nil {
		t.Fatal(err)
	}
	return p
}

// editExternal rewrites key=value in the first external tensor's entries.
func editExternal(t *testing.T, path, key, value string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		t.Fatal(err)
	}
	for _, init := range mp.Graph.Initializer {
		if init.GetDataLocation() != pb.TensorProto_EXTERNAL {
			continue
		}
		found := false
		for _, kv := range init.ExternalData {
			if kv.GetKey() == key {
				kv.Value, found = proto.String(value), true
			}
		}
		if !found {
			init.ExternalData = append(init.ExternalData, &pb.StringStringEntryProto{Key: proto.String(key), Value: proto.String(value)})
		}
		break
	}
	if b, err = proto.Marshal(mp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExternalDataHostile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, bytes.Repeat([]byte{1}, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir, model string) // after the model is saved with w.data
		want  []string                              // in the error; none: loads
	}{
		{"plain", func(*testing.T, string, string) {}, nil},
		{"symlink out of the folder", func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "w.data"))
			must(t, os.Symlink(outside, filepath.Join(dir, "w.data")))
		}, []string{"outside the model's folder", "w.data"}},
		{"symlink to a device", func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "w.data"))
			must(t, os.Symlink("/dev/zero", filepath.Join(dir, "w.data")))
		}, []string{"outside the model's folder"}},
		{"symlink inside the folder", func(t *testing.T, dir, _ string) {
			must(t, os.Rename(filepath.Join(dir, "w.data"), filepath.Join(dir, "real.data")))
			must(t, os.Symlink("real.data", filepath.Join(dir, "w.data")))
		}, nil},
		{"named pipe", func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "w.data"))
			must(t, syscall.Mkfifo(filepath.Join(dir, "w.data"), 0o644))
		}, []string{"not a regular file", "named pipe"}},
		{"folder", func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "w.data"))
			must(t, os.Mkdir(filepath.Join(dir, "w.data"), 0o755))
		}, []string{"not a regular file", "directory"}},
		{"dot-dot location", func(t *testing.T, _, model string) { editExternal(t, model, "location", "../w.data") },
			[]string{"must be relative and stay in the model's folder"}},
		{"absolute location", func(t *testing.T, _, model string) { editExternal(t, model, "location", outside) },
			[]string{"must be relative"}},
		{"offset overflow", func(t *testing.T, _, model string) {
			editExternal(t, model, "offset", strconv.FormatInt(math.MaxInt64, 10))
		}, []string{"too short"}},
		{"length overflow", func(t *testing.T, _, model string) {
			editExternal(t, model, "offset", "4096")
			editExternal(t, model, "length", strconv.FormatInt(math.MaxInt64-100, 10))
		}, []string{"too short"}},
		{"small tensor in a huge file", func(t *testing.T, dir, model string) {
			f, err := os.OpenFile(filepath.Join(dir, "w.data"), os.O_WRONLY, 0)
			must(t, err)
			must(t, f.Truncate(4<<30)) // sparse: costs no disk
			f.Close()
			editExternal(t, model, "offset", "0")
			editExternal(t, model, "length", "-1")
		}, []string{"bytes of external data", "needs"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			model := externalModel(t, dir, "w.data")
			c.setup(t, dir, model)
			start := time.Now()
			m, err := Load(model)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Extract(m, ExtractOptions{}); err != nil {
					t.Fatal(err)
				}
				return
			}
			assertBadInput(t, err, append(c.want, model)...)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Locations that merely contain ".." or name a sub-folder are legal; a
// sub-folder location is written in the same sub-folder on save.
func TestExternalDataLegalNames(t *testing.T) {
	for _, loc := range []string{"w..data", "..w", "sub/w.data", "sub/deeper/w.data"} {
		t.Run(loc, func(t *testing.T) {
			m, err := Load(externalModel(t, t.TempDir(), loc))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "copy.onnx")
			if err := m.Save(out, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(out), loc)); err != nil {
				t.Fatal(err)
			}
			m2, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m.Proto, m2.Proto) {
				t.Error("not proto.Equal after saving")
			}
		})
	}
}

// FuzzLoadExternal fuzzes a model file and its external data file
// together: whatever the bytes, loading ends in a model or a
// *BadInputError, without a panic, a hang or reading outside the folder.
func FuzzLoadExternal(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(f.TempDir(), "seed")
	if err := os.MkdirAll(seed, 0o755); err != nil {
		f.Fatal(err)
	}
	m, err := Load(bundledPath("pde_mlp.onnx"))
	if err != nil {
		f.Fatal(err)
	}
	p := filepath.Join(seed, "m.onnx")
	if err := m.Save(p, SaveOptions{ExternalThreshold: 1, ExternalName: "w.data"}); err != nil {
		f.Fatal(err)
	}
	mb, _ := os.ReadFile(p)
	db, _ := os.ReadFile(filepath.Join(seed, "w.data"))
	f.Add(mb, db)
	f.Add(mb, db[:len(db)/2])
	f.Add(mb, []byte{})
	f.Fuzz(func(t *testing.T, model, data []byte) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%d+%d bytes took %s", len(model), len(data), d)
			}
		}()
		mp := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(mp, model, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "w.data"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Load(mp)
		if err != nil {
			var bad *BadInputError
			if !errors.As(err, &bad) {
				t.Fatalf("error %v is not a *BadInputError", err)
			}
			return
		}
		for _, real := range m.ExternalFiles() {
			if filepath.Dir(real) != evalOrAbs(dir) {
				t.Fatalf("reads %s, outside %s", real, dir)
			}
		}
		if n, err := Extract(m, ExtractOptions{}); err == nil && n.Evaluable {
			_ = n.Prunable()
		}
	})
}
