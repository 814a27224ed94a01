package plain

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Int is any integer type a shape or an index list comes in.
type Int interface {
	~int | ~int32 | ~int64 | ~uint | ~uint32 | ~uint64
}

// Shape writes the dims of a tensor as "64 x 784", and no dimension at
// all as "scalar". Every dimension is written as it is, a negative one
// too (in a tensor it is an error worth seeing); declared shapes, in
// which dimensions <= 0 are dynamic, are written by Declared.
func Shape[T Int](dims []T) string {
	if len(dims) == 0 {
		return "scalar"
	}
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return strings.Join(parts, " x ")
}

// Declared writes a model's declared shape, in which a dimension <= 0 is
// dynamic: the first axis, the batch, as "N", any other as "?". So
// [-1, 784] reads "N x 784" and [1, -1, 768] "1 x ? x 768".
func Declared(dims []int64) string { return declared(dims, "N") }

// DeclaredSample writes the declared shape of one sample (the batch axis
// already dropped): every dynamic dimension (<= 0) is "?".
func DeclaredSample(dims []int64) string { return declared(dims, "?") }

func declared(dims []int64, batch string) string {
	if len(dims) == 0 {
		return "scalar"
	}
	parts := make([]string, len(dims))
	for i, d := range dims {
		switch {
		case d > 0:
			parts[i] = strconv.FormatInt(d, 10)
		case i == 0:
			parts[i] = batch
		default:
			parts[i] = "?"
		}
	}
	return strings.Join(parts, " x ")
}

// List writes the elements joined by ", " (fmt's default format for each
// element), and "none" for an empty list.
func List[T any](xs []T) string {
	if len(xs) == 0 {
		return "none"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}

// Choices writes the allowed values of a setting for "want one of ..."
// messages: "a, b or c".
func Choices(xs []string) string {
	switch len(xs) {
	case 0:
		return "none"
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// Opsets writes a model's opset imports as "ai.onnx 13, com.microsoft 1":
// the default domain ("" or "ai.onnx") first, the others by name.
func Opsets(imports map[string]int64) string {
	if len(imports) == 0 {
		return "none"
	}
	type entry struct {
		domain  string
		version int64
	}
	es := make([]entry, 0, len(imports))
	for d, v := range imports {
		if d == "" {
			d = "ai.onnx"
		}
		es = append(es, entry{d, v})
	}
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if (a.domain == "ai.onnx") != (b.domain == "ai.onnx") {
			return a.domain == "ai.onnx"
		}
		if a.domain != b.domain {
			return a.domain < b.domain
		}
		return a.version < b.version
	})
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.domain + " " + strconv.FormatInt(e.version, 10)
	}
	return strings.Join(parts, ", ")
}
