package onnxtestdata

import (
	"errors"
	"fmt"
	"github.com/ecprune/ecprune/testmodels"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/onnxio/onnxpb"
)

// EnvDir names the environment variable that, when set, replaces
// DefaultDir.
const EnvDir = "ECPRUNE_ONNX_TESTDATA"

// DefaultDir is where Debian's libonnx-testdata puts the node tests.
const DefaultDir = "/usr/share/libonnx-testdata/data/node"

// ErrUnavailable is returned (wrapped) when the test data folder is missing.
var ErrUnavailable = errors.New("ONNX backend test data not found")

// Case is one node test: a folder holding model.onnx and test_data_set_N
// folders.
type Case struct {
	Name      string // folder name, such as "test_relu"
	ModelPath string
	Sets      []Set // in the order of N
}

// Set is one test_data_set_N: the model's inputs and expected outputs, in
// the order of their file numbers (input_0.pb, input_1.pb, ...). Only tensor
// vectors are supported; sequence, map and optional ones do not decode.
type Set struct {
	Inputs, Outputs []*onnxpb.TensorProto
}

// Dir returns the folder of node tests: $ECPRUNE_ONNX_TESTDATA when set,
// otherwise DefaultDir.
func Dir() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	return DefaultDir
}

// available returns an error wrapping ErrUnavailable unless Dir exists.
func available() error {
	d := Dir()
	fi, err := os.Stat(d)
	if err != nil {
		return fmt.Errorf("%w: %v (install libonnx-testdata or set $%s)", ErrUnavailable, err, EnvDir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrUnavailable, d)
	}
	return nil
}

// Require stops the test unless the test data is present: it skips it
// locally and fails it when $CI is true.
func Require(t testing.TB) {
	t.Helper()
	testmodels.RequireTool(t, "ONNX backend test vectors", available())
}

// Cases loads, sorted by name, every case whose folder name starts with one
// of the prefixes (every case when none is given).
func Cases(prefix ...string) ([]Case, error) {
	if err := available(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(Dir())
	if err != nil {
		return nil, fmt.Errorf("listing ONNX test cases: %w", err)
	}
	var cases []Case
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || (len(prefix) > 0 && !slices.ContainsFunc(prefix, func(p string) bool { return strings.HasPrefix(name, p) })) {
			continue
		}
		c, err := load(filepath.Join(Dir(), name))
		if err != nil {
			return nil, err
		}
		cases = append(cases, c)
	}
	slices.SortFunc(cases, func(a, b Case) int { return strings.Compare(a.Name, b.Name) })
	return cases, nil
}

// Get loads the case with exactly this name.
func Get(name string) (Case, error) {
	if err := available(); err != nil {
		return Case{}, err
	}
	return load(filepath.Join(Dir(), name))
}

var (
	setRE    = regexp.MustCompile(`^test_data_set_(\d+)$`)
	inputRE  = regexp.MustCompile(`^input_(\d+)\.pb$`)
	outputRE = regexp.MustCompile(`^output_(\d+)\.pb$`)
)

// load reads the case in dir.
func load(dir string) (Case, error) {
	c := Case{Name: filepath.Base(dir), ModelPath: filepath.Join(dir, "model.onnx")}
	if _, err := os.Stat(c.ModelPath); err != nil {
		return Case{}, fmt.Errorf("ONNX test case %s: %w", c.Name, err)
	}
	sets, err := numbered(dir, setRE, true)
	if err != nil {
		return Case{}, fmt.Errorf("ONNX test case %s: %w", c.Name, err)
	}
	for _, s := range sets {
		var set Set
		if set.Inputs, err = tensors(s, inputRE); err != nil {
			return Case{}, fmt.Errorf("ONNX test case %s: %w", c.Name, err)
		}
		if set.Outputs, err = tensors(s, outputRE); err != nil {
			return Case{}, fmt.Errorf("ONNX test case %s: %w", c.Name, err)
		}
		c.Sets = append(c.Sets, set)
	}
	return c, nil
}

// numbered returns the paths in dir whose names match re (with the number
// as its first group), ordered by that number; folders when dirs is set,
// files otherwise.
func numbered(dir string, re *regexp.Regexp, dirs bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type item struct {
		n    int
		path string
	}
	var items []item
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() != dirs {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		items = append(items, item{n, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(items, func(a, b item) int { return a.n - b.n })
	paths := make([]string, len(items))
	for i, it := range items {
		paths[i] = it.path
	}
	return paths, nil
}

// tensors decodes the files in dir matching re, in number order.
func tensors(dir string, re *regexp.Regexp) ([]*onnxpb.TensorProto, error) {
	paths, err := numbered(dir, re, false)
	if err != nil {
		return nil, err
	}
	ts := make([]*onnxpb.TensorProto, len(paths))
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		ts[i] = &onnxpb.TensorProto{}
		if err := proto.Unmarshal(b, ts[i]); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", p, err)
		}
	}
	return ts, nil
}
