package main

import (
	"io"
	"sort"
	"strconv"
	"strings"

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
	entries := entryNames(names)
	return st.Write(path, func(w io.Writer) error {
		zw := npz.NewWriter(w)
		for i, n := range names {
			s := shapes[n]
			if err := zw.Write(entries[i]+".npy", mat.NewDense(s[0], s[1], arrays[n])); err != nil {
				return err
			}
		}
		return zw.Close()
	})
}

// entryNames makes archive entry names of tensor names, which come from
// the model file: no slash, backslash or control character (an entry
// "../../x" would be written outside the folder by a careless unzip), not
// "." or "..", and unique.
func entryNames(names []string) []string {
	out := make([]string, len(names))
	used := map[string]bool{}
	for i, n := range names {
		e := strings.Map(func(r rune) rune {
			if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
				return '_'
			}
			return r
		}, n)
		if e == "" || strings.Trim(e, ".") == "" {
			e = "_" + e
		}
		base := e
		for k := 2; used[e]; k++ {
			e = base + "_" + strconv.Itoa(k)
		}
		used[e] = true
		out[i] = e
	}
	return out
}
