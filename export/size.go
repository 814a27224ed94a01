package export

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/ecprune/ecprune/onnxio"
)

// Size is how big a saved model is.
type Size struct {
	// Disk is the model file plus its external data files, in bytes.
	Disk int64
	// Gzip is the sum of each of those files compressed with compress/gzip
	// at its default level (about gzip -6; -9 gains little on float data).
	// Dense zeros compress well, so this is the fair figure for the dense
	// format when artefacts are shipped compressed.
	Gzip int64
}

// Sizes measures the model at path and its external data files. The model
// is not decoded: its external data locations are read in place (see
// onnxio.FileExternalLocations), so measuring a large model costs no memory.
func Sizes(path string) (Size, error) { return SizesStaged(path, nil) }

// SizesStaged is Sizes of a model st holds staged (nil: as on disk): the
// files measured are the temporary ones that will become path and its
// external data.
func SizesStaged(path string, st *onnxio.Stage) (Size, error) {
	file := func(p string) string {
		if st != nil {
			if tmp, ok := st.Temp(p); ok {
				return tmp
			}
		}
		return p
	}
	locs, err := onnxio.FileExternalLocations(file(path), true)
	if err != nil {
		return Size{}, &onnxio.BadInputError{File: path, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	slices.Sort(locs)
	locs = slices.Compact(locs)
	var s Size
	files := []string{file(path)}
	for _, loc := range locs {
		if !filepath.IsLocal(loc) {
			return Size{}, &onnxio.BadInputError{File: path, Msg: fmt.Sprintf("external data location %q must be relative and stay in the model's folder", loc)}
		}
		files = append(files, file(filepath.Join(filepath.Dir(path), loc)))
	}
	for _, f := range files {
		d, z, err := gzipSize(f)
		if err != nil {
			return Size{}, fmt.Errorf("measuring %s: %w", path, err)
		}
		s.Disk += d
		s.Gzip += z
	}
	return s, nil
}

// gzipSize returns a file's size and its gzip-compressed size.
func gzipSize(file string) (raw, compressed int64, err error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var c counter
	zw := gzip.NewWriter(&c)
	raw, err = io.Copy(zw, f)
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", file, err)
	}
	if err := zw.Close(); err != nil {
		return 0, 0, err
	}
	return raw, int64(c), nil
}

// counter is an io.Writer that only counts.
type counter int64

func (c *counter) Write(p []byte) (int, error) {
	*c += counter(len(p))
	return len(p), nil
}

// LayerCount is the weight count and density of one dense layer.
type LayerCount struct {
	Name    string
	Params  int     // Out x In (biases excluded, as for sparsity)
	NNZ     int     // non-zero weights
	Density float64 // NNZ / Params (0 for an empty layer)
}

// Counts totals the weights and non-zeros of every dense layer of net,
// prunable or not, and gives each layer's figures. Biases are not counted:
// the method never prunes them.
func Counts(net *onnxio.Network) (params, nnz int, layers []LayerCount) {
	layers = make([]LayerCount, len(net.Layers))
	for i, l := range net.Layers {
		c := LayerCount{Name: l.Name, Params: l.Params(), NNZ: l.NonZeros()}
		if c.Params > 0 {
			c.Density = float64(c.NNZ) / float64(c.Params)
		}
		params += c.Params
		nnz += c.NNZ
		layers[i] = c
	}
	return params, nnz, layers
}
