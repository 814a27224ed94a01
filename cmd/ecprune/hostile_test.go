package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"

	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio"
	pb "github.com/ecprune/ecprune/onnxio/onnxpb"
)

// The hostile-input corpus: files and command lines a careless user or an
// attacker may give. Every case is built in a fresh folder and must end
// with exit status 2 and exactly one line on stderr naming the problem,
// no panic, its input files byte-identical, nothing left in the output
// folder or beside the inputs, and (cases run as a separate process)
// a peak RSS under 256 MB.

const hostileRSSLimit = 256 << 20

type hostileCase struct {
	name string
	// setup builds the inputs in dir and returns the command line; outputs
	// are named in out, a folder of their own.
	setup func(t *testing.T, dir, out string) []string
	want  string // in the line on stderr
	// sub runs the built binary in its own process, with a time limit and
	// its peak memory measured: for cases that could hang or blow memory.
	sub bool
}

var (
	pdeModel  = filepath.Join("..", "..", "testdata", "models", "pde_mlp.onnx")
	pdeCalib  = filepath.Join("..", "..", "testdata", "data", "pde_calib_x.npy")
	pdeLabels = filepath.Join("..", "..", "testdata", "data", "pde_calib_y.npy")
	mnModel   = filepath.Join("..", "..", "testdata", "models", "mnist_mlp_gemm.onnx")
	mnCalib   = filepath.Join("..", "..", "testdata", "data", "mnist_calib_x.npy")
	mnLabels  = filepath.Join("..", "..", "testdata", "data", "mnist_calib_y.npy")
)

// cp copies a file into dir and returns its new path.
func cp(t *testing.T, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// extModel writes the PDE model to dir/m.onnx with its tensors in dir/w.data.
func extModel(t *testing.T, dir string) string {
	t.Helper()
	m, err := onnxio.Load(pdeModel)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "m.onnx")
	if err := m.Save(p, onnxio.SaveOptions{ExternalThreshold: 1, ExternalName: "w.data"}); err != nil {
		t.Fatal(err)
	}
	return p
}

// editModel rewrites a model file through its protobuf.
func editModel(t *testing.T, path string, edit func(*pb.ModelProto)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		t.Fatal(err)
	}
	edit(mp)
	if b, err = proto.Marshal(mp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setExternal sets key=value on the first external tensor.
func setExternal(key, value string) func(*pb.ModelProto) {
	return func(mp *pb.ModelProto) {
		for _, init := range mp.Graph.Initializer {
			if init.GetDataLocation() != pb.TensorProto_EXTERNAL {
				continue
			}
			for _, kv := range init.ExternalData {
				if kv.GetKey() == key {
					kv.Value = proto.String(value)
					return
				}
			}
			init.ExternalData = append(init.ExternalData, &pb.StringStringEntryProto{Key: proto.String(key), Value: proto.String(value)})
			return
		}
	}
}

// npyBytes is a C-order .npy file of float32 or int64 values.
func npyBytes(shape []int, f32 []float32, i64 []int64) []byte {
	descr := "<f4"
	if i64 != nil {
		descr = "<i8"
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binWrite(&b, uint16(len(h)))
	b.WriteString(h)
	if i64 != nil {
		binWrite(&b, i64)
	} else {
		binWrite(&b, f32)
	}
	return b.Bytes()
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pdeX writes n PDE-shaped ([n, 2]) samples with value v.
func pdeX(t *testing.T, dir, name string, n int, v func(i int) float32) string {
	x := make([]float32, 2*n)
	for i := range x {
		x[i] = v(i)
	}
	return writeFile(t, dir, name, npyBytes([]int{n, 2}, x, nil))
}

func ramp(i int) float32 { return float32(i%97) / 97 }

// mnistLabels writes n integer class labels from f.
func mnistLabels(t *testing.T, dir, name string, n int, f func(i int) int64) string {
	y := make([]int64, n)
	for i := range y {
		y[i] = f(i)
	}
	return writeFile(t, dir, name, npyBytes([]int{n}, nil, y))
}

var hostileCases = []hostileCase{
	// 1. External data.
	{"external data: link out of the model's folder", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		secret := writeFile(t, t.TempDir(), "secret", bytes.Repeat([]byte("x"), 1<<16))
		os.Remove(filepath.Join(dir, "w.data"))
		must(t, os.Symlink(secret, filepath.Join(dir, "w.data")))
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib}
	}, "outside the model's folder", false},
	{"external data: link to /dev/zero", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		os.Remove(filepath.Join(dir, "w.data"))
		must(t, os.Symlink("/dev/zero", filepath.Join(dir, "w.data")))
		return []string{"inspect", m}
	}, "outside the model's folder", true},
	{"external data: named pipe", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		os.Remove(filepath.Join(dir, "w.data"))
		must(t, syscall.Mkfifo(filepath.Join(dir, "w.data"), 0o644))
		return []string{"inspect", m}
	}, "not a regular file", true},
	{"external data: folder", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		os.Remove(filepath.Join(dir, "w.data"))
		must(t, os.Mkdir(filepath.Join(dir, "w.data"), 0o755))
		return []string{"inspect", m}
	}, "not a regular file", false},
	{"external data: dot-dot location", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		editModel(t, m, setExternal("location", "../w.data"))
		return []string{"inspect", m}
	}, "stay in the model's folder", false},
	{"external data: absolute location", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		editModel(t, m, setExternal("location", "/etc/passwd"))
		return []string{"inspect", m}
	}, "must be relative", false},
	{"external data: offset+length overflows", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		editModel(t, m, setExternal("offset", "4096"))
		editModel(t, m, setExternal("length", strconv.FormatInt(math.MaxInt64-10, 10)))
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--json"}
	}, "too short", false},
	{"external data: 4-byte tensor in a 4 GiB file", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		f, err := os.OpenFile(filepath.Join(dir, "w.data"), os.O_WRONLY, 0)
		must(t, err)
		must(t, f.Truncate(4<<30)) // sparse: no disk used
		f.Close()
		editModel(t, m, func(mp *pb.ModelProto) {
			setExternal("offset", "0")(mp)
			for _, init := range mp.Graph.Initializer {
				if init.GetDataLocation() == pb.TensorProto_EXTERNAL {
					init.ExternalData = init.ExternalData[:2] // location, offset: to the end of the file
					break
				}
			}
		})
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib}
	}, "bytes of external data", true},
	{"model: a named pipe", func(t *testing.T, dir, out string) []string {
		p := filepath.Join(dir, "m.onnx")
		must(t, syscall.Mkfifo(p, 0o644))
		return []string{"inspect", p}
	}, "not a regular file", true},
	{"model: /dev/zero", func(t *testing.T, dir, out string) []string {
		return []string{"inspect", "/dev/zero"}
	}, "not a regular file", true},

	// 2. Outputs that would overwrite inputs or each other.
	{"--report is the calibration file", func(t *testing.T, dir, out string) []string {
		x := cp(t, pdeCalib, dir, "x.npy")
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", x, "--report", x}
	}, "--report is --calib", false},
	{"--json=FILE is the model (inspect)", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "m.onnx")
		return []string{"inspect", "--json=" + m, m}
	}, "--json=FILE is the input model", false},
	{"--json=FILE is the model's external data", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		return []string{"inspect", "--json=" + filepath.Join(dir, "w.data"), m}
	}, "external data file", false},
	{"--report is -o", func(t *testing.T, dir, out string) []string {
		p := filepath.Join(out, "p.onnx")
		return []string{"prune", pdeModel, "-o", p, "--calib", pdeCalib, "--report", p}
	}, "--report and -o name the same file", false},
	{"--scores is -o", func(t *testing.T, dir, out string) []string {
		p := filepath.Join(out, "p.onnx")
		return []string{"prune", pdeModel, "-o", p, "--calib", pdeCalib, "--scores", p}
	}, "--scores and -o name the same file", false},
	{"-o is a hard link to the calibration file", func(t *testing.T, dir, out string) []string {
		x := cp(t, pdeCalib, dir, "x.npy")
		must(t, os.Link(x, filepath.Join(out, "p.onnx")))
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", x}
	}, "-o is --calib", false},
	{"-o is a link to the model", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "m.onnx")
		must(t, os.Symlink(m, filepath.Join(out, "p.onnx")))
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib}
	}, "-o is the input model", false},
	{"-o beside the model would write over its external data", func(t *testing.T, dir, out string) []string {
		m := extModel(t, dir)
		return []string{"prune", m, "-o", filepath.Join(dir, "p.onnx"), "--calib", pdeCalib}
	}, "-o's external data file is the external data file", false},
	{"--save-outputs is the data", func(t *testing.T, dir, out string) []string {
		x := cp(t, pdeCalib, dir, "x.npy")
		return []string{"eval", pdeModel, "--data", x, "--save-outputs", x}
	}, "--save-outputs is --data", false},
	{"--save-outputs is the reference model", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "ref.onnx")
		return []string{"eval", pdeModel, "--data", pdeCalib, "--against", m, "--save-outputs", m}
	}, "--save-outputs is --against", false},
	{"--csv is the test labels", func(t *testing.T, dir, out string) []string {
		y := cp(t, pdeLabels, dir, "y.npy")
		return []string{"sweep", pdeModel, "--calib", pdeCalib, "--test", pdeCalib, "--test-labels", y, "--csv", y}
	}, "--csv is --test-labels", false},
	{"a figure --plot derives is the calibration file", func(t *testing.T, dir, out string) []string {
		x := cp(t, pdeCalib, dir, "f-size.png")
		return []string{"sweep", pdeModel, "--calib", x, "--test", pdeCalib, "--plot", filepath.Join(dir, "f.png")}
	}, "--plot is --calib", false},
	{"report --json=FILE is a model", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "m.onnx")
		return []string{"report", pdeModel, m, "--json=" + m}
	}, "--json=FILE is the input model", false},
	{"-o is a device", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", "/dev/null", "--calib", pdeCalib}
	}, "not a regular file", false},
	{"-o is a folder", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", out, "--calib", pdeCalib}
	}, "is a folder", false},

	// 3. Archives and arrays.
	{"calibration .npz: zip bomb", func(t *testing.T, dir, out string) []string {
		z := npzBomb(t, dir, 64<<20, 0) // 512 MiB of zeros in a few hundred kB
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", z}
	}, "every calibration sample is the same", true},
	{"calibration .npz: zip bomb with --limit", func(t *testing.T, dir, out string) []string {
		z := npzBomb(t, dir, 64<<20, 0)
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", z, "--limit", "100"}
	}, "every calibration sample is the same", true},
	{"calibration .npz: member larger than its header", func(t *testing.T, dir, out string) []string {
		z := npzBomb(t, dir, 1000, 64<<20)
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", z}
	}, "more than the", true},
	{"calibration: a named pipe", func(t *testing.T, dir, out string) []string {
		p := filepath.Join(dir, "x.npy")
		must(t, syscall.Mkfifo(p, 0o644))
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", p}
	}, "not a regular file", true},
	{"calibration: /dev/zero", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", "/dev/zero"}
	}, "not a regular file", true},

	// 4. Degenerate calibration.
	{"calibration: all zero", func(t *testing.T, dir, out string) []string {
		x := pdeX(t, dir, "x.npy", 500, func(int) float32 { return 0 })
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", x}
	}, "every calibration sample is the same", false},
	{"calibration: one sample", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--limit", "1"}
	}, "1 calibration sample left", false},
	{"calibration: --holdout 0.999 leaves one sample", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--holdout", "0.999"}
	}, "1 calibration sample left", false},

	// 5. Everything checkable before the analysis.
	{"labels: class out of range", func(t *testing.T, dir, out string) []string {
		y := mnistLabels(t, dir, "y.npy", 256, func(i int) int64 { return int64(i % 11) })
		return []string{"prune", mnModel, "-o", filepath.Join(out, "p.onnx"), "--calib", mnCalib, "--labels", y}
	}, "outside the model's 10 outputs", false},
	{"labels: class indices stored as floats", func(t *testing.T, dir, out string) []string {
		y := make([]float32, 256)
		for i := range y {
			y[i] = float32(i % 10)
		}
		p := writeFile(t, dir, "y.npy", npyBytes([]int{256}, y, nil))
		return []string{"prune", mnModel, "-o", filepath.Join(out, "p.onnx"), "--calib", mnCalib, "--labels", p}
	}, "--task classification", false},
	{"labels: fractions for classification", func(t *testing.T, dir, out string) []string {
		y := make([]float32, 256)
		for i := range y {
			y[i] = 0.5
		}
		p := writeFile(t, dir, "y.npy", npyBytes([]int{256}, y, nil))
		return []string{"prune", mnModel, "-o", filepath.Join(out, "p.onnx"), "--calib", mnCalib, "--labels", p, "--task", "classification"}
	}, "fractions", false},
	{"labels: one-hot", func(t *testing.T, dir, out string) []string {
		y := make([]int64, 256*10)
		for i := range 256 {
			y[i*10+i%10] = 1
		}
		p := writeFile(t, dir, "y.npy", npyBytes([]int{256, 10}, nil, y))
		return []string{"prune", mnModel, "-o", filepath.Join(out, "p.onnx"), "--calib", mnCalib, "--labels", p}
	}, "one-hot", false},
	{"labels: another length", func(t *testing.T, dir, out string) []string {
		y := mnistLabels(t, dir, "y.npy", 100, func(i int) int64 { return int64(i % 10) })
		return []string{"prune", mnModel, "-o", filepath.Join(out, "p.onnx"), "--calib", mnCalib, "--labels", y}
	}, "100 labels, expected 256", false},
	{"eval: labels out of range", func(t *testing.T, dir, out string) []string {
		y := mnistLabels(t, dir, "y.npy", 256, func(i int) int64 { return 12 })
		return []string{"eval", mnModel, "--data", mnCalib, "--labels", y, "--save-outputs", filepath.Join(out, "o.npy")}
	}, "outside the model's 10 outputs", false},
	{"model: NaN weight", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "m.onnx")
		editModel(t, m, func(mp *pb.ModelProto) {
			for _, init := range mp.Graph.Initializer {
				if len(init.RawData) >= 8 && len(init.Dims) == 2 {
					nan := math.Float32bits(float32(math.NaN()))
					init.RawData[4], init.RawData[5], init.RawData[6], init.RawData[7] = byte(nan), byte(nan>>8), byte(nan>>16), byte(nan>>24)
					return
				}
			}
		})
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib}
	}, "holds NaN at row 0, column 1", false},
	{"--format sparse-initializer on an IR-4 model", func(t *testing.T, dir, out string) []string {
		m := cp(t, pdeModel, dir, "m.onnx")
		editModel(t, m, func(mp *pb.ModelProto) { mp.IrVersion = proto.Int64(4) })
		return []string{"prune", m, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--format", "sparse-initializer"}
	}, "need IR version", false},
	{"--holdout nan", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--holdout", "nan"}
	}, "--holdout NaN", false},
	{"--probes -1", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--probes", "-1"}
	}, "--probes -1", false},
	{"--external-data -5", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--external-data", "-5"}
	}, "--external-data -5", false},
	{"--sparsity 80", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--sparsity", "80"}
	}, "for 80% write 0.8", false},
	{"--sparsity nan", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--sparsity", "nan"}
	}, "outside [0, 1)", false},
	{"--layer-sparsity 50", func(t *testing.T, dir, out string) []string {
		return []string{"prune", pdeModel, "-o", filepath.Join(out, "p.onnx"), "--calib", pdeCalib, "--layer-sparsity", "x=50"}
	}, "for 50% write 0.5", false},
}

// npzBomb writes an .npz whose one member declares rows PDE samples of
// zeros and holds extra bytes more than that, deflated.
func npzBomb(t *testing.T, dir string, rows, extra int) string {
	t.Helper()
	p := filepath.Join(dir, "bomb.npz")
	f, err := os.Create(p)
	must(t, err)
	zw := zip.NewWriter(f)
	w, err := zw.Create("input.npy")
	must(t, err)
	h := npyBytes([]int{rows, 2}, []float32{}, nil)
	_, err = w.Write(h)
	must(t, err)
	zero := make([]byte, 1<<20)
	for left := rows*8 + extra; left > 0; left -= len(zero) {
		_, err = w.Write(zero[:min(left, len(zero))])
		must(t, err)
	}
	must(t, zw.Close())
	must(t, f.Close())
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot records every file under dir: type, and content hash for
// regular files (size and time for huge sparse ones).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		v := info.Mode().String()
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case info.Mode().IsRegular() && info.Size() > 64<<20:
			v += fmt.Sprintf(" %d %d", info.Size(), info.ModTime().UnixNano())
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[p] = v
		return nil
	})
	return out
}

var (
	hostileBinOnce sync.Once
	hostileBin     string
	hostileBinErr  error
)

// builtBinary builds ecprune once for the cases run as a process.
func builtBinary(t *testing.T) string {
	hostileBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ecprune-hostile-*")
		if err != nil {
			hostileBinErr = err
			return
		}
		hostileBin = filepath.Join(dir, "ecprune")
		if b, err := exec.Command("go", "build", "-o", hostileBin, ".").CombinedOutput(); err != nil {
			hostileBinErr = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if hostileBinErr != nil {
		t.Fatal(hostileBinErr)
	}
	return hostileBin
}

// rssLaunchEnv makes the test binary a launcher: it runs os.Args[1:] as a
// child, passes its output and exit status through, and writes the child's
// peak RSS in bytes to the named file.
const rssLaunchEnv = "ECPRUNE_TEST_RSS_LAUNCH"

func init() {
	file := os.Getenv(rssLaunchEnv)
	if file == "" {
		return
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, rssLaunchEnv+"=") })
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		os.WriteFile(file, []byte(strconv.FormatInt(int64(ru.Maxrss)*1024, 10)), 0o644)
	}
	os.Exit(code)
}

func TestHostile(t *testing.T) {
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			dir, out := t.TempDir(), t.TempDir()
			args := c.setup(t, dir, out)
			before, outBefore := snapshot(t, dir), snapshot(t, out)
			var code int
			var stdout, stderr string
			if c.sub {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				// Started through a small launcher (this test binary, fresh):
				// Linux keeps ru_maxrss across execve, so a child forked
				// straight from this large test process would start at its
				// parent's RSS.
				rssFile := filepath.Join(t.TempDir(), "rss")
				cmd := exec.CommandContext(ctx, os.Args[0], append([]string{builtBinary(t)}, args...)...)
				cmd.Env = append(os.Environ(), rssLaunchEnv+"="+rssFile)
				var o, e bytes.Buffer
				cmd.Stdout, cmd.Stderr = &o, &e
				err := cmd.Run()
				if ctx.Err() != nil {
					t.Fatalf("still running after 60 s (hangs?)")
				}
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(rssFile)
				if err != nil {
					t.Fatalf("the launcher reported no peak RSS: %v", err)
				}
				if rss, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); rss > hostileRSSLimit || rss <= 0 {
					t.Errorf("peak RSS %d MB, over %d MB", rss>>20, hostileRSSLimit>>20)
				}
				stdout, stderr = o.String(), e.String()
			} else {
				code, stdout, stderr = cliRun(t, args...)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != exitBad {
				t.Errorf("exit %d, want %d\nstderr: %s", code, exitBad, stderr)
			}
			if len(lines) != 1 || lines[0] == "" {
				t.Errorf("stderr has %d lines, want 1:\n%s", len(lines), stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr does not mention %q:\n%s", c.want, stderr)
			}
			if strings.Contains(stderr+stdout, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("panic:\n%s", stderr)
			}
			if strings.Contains(strings.Join(args, " "), "--json ") || args[len(args)-1] == "--json" {
				var doc map[string]any
				decodeOne(t, stdout, &doc)
				if doc["error"] == nil {
					t.Errorf("--json: no error document:\n%s", stdout)
				}
			}
			after, outAfter := snapshot(t, dir), snapshot(t, out)
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("the input folder changed:\nbefore %v\nafter  %v", before, after)
			}
			if fmt.Sprint(outBefore) != fmt.Sprint(outAfter) {
				t.Errorf("the output folder changed:\nbefore %v\nafter  %v", outBefore, outAfter)
			}
		})
	}
}

func binWrite(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case uint16:
		b.WriteByte(byte(v))
		b.WriteByte(byte(v >> 8))
	case []float32:
		for _, f := range v {
			u := math.Float32bits(f)
			b.Write([]byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)})
		}
	case []int64:
		for _, x := range v {
			for k := 0; k < 8; k++ {
				b.WriteByte(byte(uint64(x) >> (8 * k)))
			}
		}
	}
}

// An interrupted run removes its staged files and the folders it made.
func TestInterruptLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out := t.TempDir()
	cmd := exec.Command(builtBinary(t), "sweep", mnModel, "--calib", mnCalib, "--test", mnCalib,
		"--csv", filepath.Join(out, "s.csv"), "--save-dir", filepath.Join(out, "models"), "-q")
	var e bytes.Buffer
	cmd.Stderr = &e
	must(t, cmd.Start())
	time.Sleep(3 * time.Second) // the sweep of the defaults takes far longer
	must(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130\n%s", err, e.String())
	}
	if left := snapshot(t, out); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if !strings.Contains(e.String(), "interrupted") || strings.Count(e.String(), "\n") != 1 {
		t.Errorf("stderr: %q", e.String())
	}
}
