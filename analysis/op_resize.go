package analysis

import (
	"fmt"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Resize and Upsample in nearest mode: each output element copies one
// input element, so both are gather maps.

func init() {
	register("Resize", gatherKernel(resizeMap, checkResize))
	register("Upsample", gatherKernel(resizeMap, checkResize))
}

var (
	resizeCoords   = map[string]bool{"half_pixel": true, "pytorch_half_pixel": true, "align_corners": true, "asymmetric": true, "tf_half_pixel_for_nn": true}
	resizeNearests = map[string]bool{"round_prefer_floor": true, "round_prefer_ceil": true, "floor": true, "ceil": true}
)

func checkResize(op *onnxio.Op) error {
	if m := op.AttrString("mode", "nearest"); m != "nearest" {
		return fmt.Errorf("mode %q: only nearest is supported", m)
	}
	if c := op.AttrString("coordinate_transformation_mode", "half_pixel"); !resizeCoords[c] {
		return fmt.Errorf("coordinate_transformation_mode %q is not supported", c)
	}
	if n := op.AttrString("nearest_mode", "round_prefer_floor"); !resizeNearests[n] {
		return fmt.Errorf("nearest_mode %q is not supported", n)
	}
	if op.HasAttr("axes") {
		return fmt.Errorf("the axes attribute is not supported")
	}
	if p := op.AttrString("keep_aspect_ratio_policy", "stretch"); p != "stretch" {
		return fmt.Errorf("keep_aspect_ratio_policy %q is not supported", p)
	}
	return nil
}

// resizeMap is the gather map of a nearest Resize or Upsample. Upsample
// and Resize-10 read the scales from input 1 (Upsample-7: the attribute)
// and pick floor(x / scale) (ceil when shrinking), as ONNX Runtime does;
// Resize from opset 11 takes roi, scales and sizes as inputs 1-3 and the
// coordinate transformation and rounding from its attributes.
func resizeMap(op *onnxio.Op, in []*Tensor) (*gatherMap, error) {
	x, err := need(in, 0)
	if err != nil {
		return nil, err
	}
	r := x.Rank()
	legacy := op.Type == "Upsample" || op.Opset != 0 && op.Opset < 11
	var scales []float64
	var sizes []int
	switch {
	case legacy && len(in) > 1 && in[1] != nil:
		scales = in[1].Data
	case legacy:
		scales = op.AttrFloats("scales")
	default:
		if len(in) > 3 && in[3] != nil && in[3].Len() > 0 {
			sizes = intsOf(in[3])
		} else if len(in) > 2 && in[2] != nil {
			scales = in[2].Data
		}
	}
	if len(sizes) == 0 && len(scales) != r || len(sizes) != 0 && len(sizes) != r {
		return nil, fmt.Errorf("%d scales and %d sizes for an input of rank %d", len(scales), len(sizes), r)
	}
	coord := op.AttrString("coordinate_transformation_mode", "half_pixel")
	nearest := op.AttrString("nearest_mode", "round_prefer_floor")
	shape := make([]int, r)
	src := make([][]int, r)
	for a := range r {
		n := x.Shape[a]
		var o int
		var s float64
		if sizes != nil {
			o = sizes[a]
			s = float64(o) / float64(n)
		} else {
			s = scales[a]
			o = int(math.Floor(float64(n) * s))
		}
		if o < 0 || s <= 0 {
			return nil, fmt.Errorf("output size %d (scale %g) on axis %d", o, s, a)
		}
		shape[a] = o
		src[a] = make([]int, o)
		for j := range o {
			var i int
			if legacy {
				v := float64(j) / s
				if s < 1 {
					i = int(math.Ceil(v))
				} else {
					i = int(v)
				}
			} else {
				var v float64
				switch coord {
				case "half_pixel":
					v = (float64(j)+0.5)/s - 0.5
				case "pytorch_half_pixel":
					if o > 1 {
						v = (float64(j)+0.5)/s - 0.5
					}
				case "align_corners":
					if o > 1 {
						v = float64(j) * float64(n-1) / float64(o-1)
					}
				case "asymmetric":
					v = float64(j) / s
				case "tf_half_pixel_for_nn":
					v = (float64(j) + 0.5) / s
				}
				switch nearest {
				case "floor":
					i = int(math.Floor(v))
				case "ceil":
					i = int(math.Ceil(v))
				case "round_prefer_ceil":
					i = int(math.Floor(v + 0.5))
				default:
					i = int(math.Ceil(v - 0.5))
				}
			}
			src[a][j] = min(max(i, 0), n-1)
		}
	}
	m := &gatherMap{Shape: shape, Pos: make([]int, ShapeSize(shape))}
	st := strides(x.Shape)
	cnt := make([]int, r)
	for k := range m.Pos {
		pos := 0
		for a := range r {
			pos += src[a][cnt[a]] * st[a]
		}
		m.Pos[k] = pos
		for a := r - 1; a >= 0; a-- {
			cnt[a]++
			if cnt[a] < shape[a] {
				break
			}
			cnt[a] = 0
		}
	}
	return m, nil
}
