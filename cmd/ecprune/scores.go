package main

import (
	"io"
	"sort"

	"codeberg.org/sbinet/npyio/npz"
	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/onnxio"
)

// saveNpz writes 2-D float64 arrays to an .npz, atomically. Member names
// get numpy's ".npy" suffix so np.load keys them by the plain name.
func saveNpz(path string, arrays map[string][]float64, shapes map[string][]int, st *onnxio.Stage) error {
	names := make([]string, 0, len(arrays))
	for k := range arrays {
		names = append(names, k)
	}
	sort.Strings(names) // deterministic member order
	return st.Write(path, func(w io.Writer) error {
		zw := npz.NewWriter(w)
		for _, n := range names {
			s := shapes[n]
			if err := zw.Write(n+".npy", mat.NewDense(s[0], s[1], arrays[n])); err != nil {
				return err
			}
		}
		return zw.Close()
	})
}
