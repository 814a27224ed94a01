package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ecprune/ecprune/onnxio"
)

// Tests of float32-resident weights (mulW), of the row-blocked float32
// products (gemm32Into) and of the in-place Relus of Collect's traces.

// rsSetBlock sets *p (wBlock or c32Max) to v for the rest of the test.
func rsSetBlock(t *testing.T, p *int, v int) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// rsWeights draws n float32-exact weights, as float32 and as float64.
func rsWeights(rng *rand.Rand, n int) ([]float32, []float64) {
	w32, w := make([]float32, n), make([]float64, n)
	for i := range w32 {
		w32[i] = float32(2*rng.Float64() - 1)
		w[i] = float64(w32[i])
	}
	return w32, w
}

// rsLayers returns two layers with the same weights (Out x In): one
// holding them in W32, the other in W.
func rsLayers(rng *rand.Rand, out, in int) (l32, l64 *onnxio.Layer) {
	w32, w := rsWeights(rng, out*in)
	l32 = &onnxio.Layer{Name: "w32", Out: out, In: in, W32: w32, TransposeIdx: -1, AddIdx: -1}
	l64 = &onnxio.Layer{Name: "w64", Out: out, In: in, W: w, TransposeIdx: -1, AddIdx: -1}
	return l32, l64
}

// rsOperands makes the operands of mulW's product: layers with the same
// weights in W32 and W (Out x In: n x k for a W^T, k x n for a W), a
// (m x k) and a starting c (m x n).
func rsOperands(rng *rand.Rand, transB bool, m, n, k int) (l32, l64 *onnxio.Layer, a, c0 []float64) {
	out, in := n, k
	if !transB {
		out, in = k, n
	}
	l32, l64 = rsLayers(rng, out, in)
	return l32, l64, randSlice(rng, m*k, -1, 1), randSlice(rng, m*n, -2, 2)
}

// rsScale is, per element of c = op(a) op(b) + beta c0, the sum of the
// magnitudes of its terms |beta c0| + sum_l |op(a)_il op(b)_lj|: rounding
// errors are relative to it (a plain relative error is meaningless where
// the sum cancels).
func rsScale(ta, tb bool, m, n, k int, a, b, c0 []float64, beta float64) []float64 {
	s := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			v := math.Abs(beta * c0[i*n+j])
			for l := 0; l < k; l++ {
				av, bv := a[i*k+l], b[l*n+j]
				if ta {
					av = a[l*m+i]
				}
				if tb {
					bv = b[j*k+l]
				}
				v += math.Abs(av * bv)
			}
			s[i*n+j] = v
		}
	}
	return s
}

// rsCheckScaled fails t where |got-want| > rel*scale (+ a tiny floor).
func rsCheckScaled(t *testing.T, what string, got, want, scale []float64, rel float64) {
	t.Helper()
	checkEach(t, what, got, want, func(i int) (bool, string) {
		return math.Abs(got[i]-want[i]) <= rel*scale[i]+1e-300, fmt.Sprintf("scale %.3g", scale[i])
	})
}

// rsSameBits fails t where got and want differ in any bit.
func rsSameBits(t *testing.T, what string, got, want []float64) {
	t.Helper()
	checkEach(t, what, got, want, func(i int) (bool, string) {
		return math.Float64bits(got[i]) == math.Float64bits(want[i]), "bit for bit"
	})
}

// rsDefaultBLAS: the products go to internal/gemm, which sums every
// element over k in the same order whatever the shape of the product.
func rsDefaultBLAS() bool { return strings.HasPrefix(BLASName, "gonum") }

func TestIsF32(t *testing.T) {
	if !isF32(matmul32) {
		t.Error("isF32(matmul32) = false")
	}
	if isF32(matmul) {
		t.Error("isF32(matmul) = true")
	}
	wrapped := func(transA, transB bool, m, n, k int, a, b, c []float64, beta float64) {
		matmul32(transA, transB, m, n, k, a, b, c, beta)
	}
	if isF32(wrapped) {
		t.Error("isF32 of a closure calling matmul32 = true")
	}
}

// TestMulWResident: mulW on float32-resident weights (W32) gives, with the
// float64 product, what matmul gives on the float64 copy of the weights
// (bit for bit where the summation order is the same), in blocks of at
// most wBlock weights; with the float32 product, what matmul32 gives.
func TestMulWResident(t *testing.T) {
	type tc struct {
		m, n, k int
		block   int // wBlock; 0: unchanged (no blocking)
		blocks  int // mm calls expected with the float64 product for transB, !transB (0: don't check)
		blocksN int
	}
	cases := []tc{
		{m: 4, n: 5, k: 3, block: 0, blocks: 1, blocksN: 1},
		// wBlock 7: transB: 2 rows of W (k=3) per block, 5 = 2+2+1;
		// !transB: 2 rows of W (n=3) per block over k=5: 2+2+1.
		{m: 4, n: 5, k: 3, block: 7, blocks: 3},
		{m: 3, n: 3, k: 5, block: 7, blocksN: 3},
		// wBlock 64: transB 7 rows (k=9): 13 = 7+6; !transB 4 rows (n=13): 9 = 4+4+1.
		{m: 6, n: 13, k: 9, block: 64, blocks: 2, blocksN: 3},
		// Exact partitions: 30 = 10 x 3 (k=20), 20 = 10 x 2 (n=30).
		{m: 4, n: 30, k: 20, block: 64, blocks: 10, blocksN: 10},
		// One row of W wider than wBlock: one row per block.
		{m: 2, n: 6, k: 9, block: 7, blocks: 6},
		{m: 2, n: 9, k: 6, block: 7, blocksN: 6},
		{m: 1, n: 17, k: 11, block: 40, blocks: 6, blocksN: 6},
		// k deeper than the kernels' k panels (256 or 384): blocks over n
		// still sum each element in one product's order; blocks over k not.
		{m: 3, n: 10, k: 400, block: 1200, blocks: 4, blocksN: 4},
		{m: 5, n: 7, k: 9, block: 1 << 20, blocks: 1, blocksN: 1},
	}
	for ci, c := range cases {
		for _, transB := range []bool{true, false} {
			for _, beta := range []float64{0, 1, 0.5} {
				name := fmt.Sprintf("%dx%dx%d/block%d/transB=%v/beta=%v", c.m, c.n, c.k, c.block, transB, beta)
				t.Run(name, func(t *testing.T) {
					if c.block > 0 {
						rsSetBlock(t, &wBlock, c.block)
					}
					rng := rand.New(rand.NewPCG(uint64(ci), 11))
					m, n, k := c.m, c.n, c.k
					l32, l64, a, c0 := rsOperands(rng, transB, m, n, k)
					scale := rsScale(false, transB, m, n, k, a, l64.W, c0, beta)

					want := append([]float64(nil), c0...)
					mulW(matmul, transB, m, n, k, a, l64, want, beta)
					// matmul itself against the naive sum, so that the
					// reference is sound.
					naive := make([]float64, m*n)
					rsNaive(transB, m, n, k, a, l64.W, c0, naive, beta)
					rsCheckScaled(t, "matmul(W)", want, naive, scale, 1e-13)

					// The float64 product on W32, through a recording
					// matmulFunc (not matmul32, so the float64 path).
					var calls [][2]int // (n, k) of each call
					rec := func(transA, tB bool, m, n, k int, a, b, c []float64, beta float64) {
						if transA || tB != transB {
							t.Errorf("mulW called mm with transA=%v transB=%v", transA, tB)
						}
						calls = append(calls, [2]int{n, k})
						matmul(transA, tB, m, n, k, a, b, c, beta)
					}
					got := append([]float64(nil), c0...)
					mulW(rec, transB, m, n, k, a, l32, got, beta)
					got2 := append([]float64(nil), c0...)
					mulW(matmul, transB, m, n, k, a, l32, got2, beta)
					rsSameBits(t, "mulW(recording) vs mulW(matmul)", got, got2)

					// Blocks: within wBlock (or one row of W), covering W.
					sum := 0
					for _, nk := range calls {
						rowsW, width := nk[0], nk[1] // transB: rows of W over n
						if !transB {
							rowsW, width = nk[1], nk[0]
						}
						if rowsW*width > max(wBlock, width) {
							t.Errorf("a block of %d x %d weights, wBlock %d", rowsW, width, wBlock)
						}
						sum += rowsW
					}
					if sum != l32.Out {
						t.Errorf("blocks cover %d rows of W, want %d (calls %v)", sum, l32.Out, calls)
					}
					wantCalls := c.blocks
					if !transB {
						wantCalls = c.blocksN
					}
					if wantCalls > 0 && len(calls) != wantCalls {
						t.Errorf("%d products, want %d (calls %v)", len(calls), wantCalls, calls)
					}

					sameOrder := len(calls) == 1 || (transB && k <= 256 && rsDefaultBLAS())
					if sameOrder {
						rsSameBits(t, "mulW(matmul, W32)", got, want)
					} else {
						rsCheckScaled(t, "mulW(matmul, W32)", got, want, scale, 1e-12)
					}

					// The float32 product: W32 as it is, against matmul32 on W.
					g32 := append([]float64(nil), c0...)
					mulW(matmul32, transB, m, n, k, a, l32, g32, beta)
					w32 := append([]float64(nil), c0...)
					mulW(matmul32, transB, m, n, k, a, l64, w32, beta)
					rsCheckScaled(t, "mulW(matmul32, W32) vs matmul32(W)", g32, w32, scale, 1e-5)
					// Both round a and W to float32 and run gemm32Into on
					// the same operands.
					rsSameBits(t, "mulW(matmul32, W32) vs matmul32(W)", g32, w32)
					rsCheckScaled(t, "mulW(matmul32, W32) vs float64", g32, want, scale, 1e-5)
				})
			}
		}
	}
}

// rsNaive sets c = a op(b) + beta c0 by the triple loop (a m x k; b n x k
// when tb, else k x n).
func rsNaive(tb bool, m, n, k int, a, b, c0, c []float64, beta float64) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := beta * c0[i*n+j]
			for l := 0; l < k; l++ {
				bv := b[l*n+j]
				if tb {
					bv = b[j*k+l]
				}
				s += a[i*k+l] * bv
			}
			c[i*n+j] = s
		}
	}
}

// TestMulWDegenerate: empty products with W32 weights leave c = beta c,
// as matmul does.
func TestMulWDegenerate(t *testing.T) {
	for _, sz := range [][3]int{{0, 3, 2}, {3, 0, 2}, {3, 2, 0}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, transB := range []bool{true, false} {
			for _, mm := range []struct {
				name string
				f    matmulFunc
			}{{"matmul", matmul}, {"matmul32", matmul32}} {
				for _, block := range []int{1 << 20, 1} {
					t.Run(fmt.Sprintf("%dx%dx%d/transB=%v/%s/block%d", m, n, k, transB, mm.name, block), func(t *testing.T) {
						rsSetBlock(t, &wBlock, block)
						rng := rand.New(rand.NewPCG(5, 6))
						l32, _, a, c0 := rsOperands(rng, transB, m, n, k)
						want := make([]float64, m*n)
						for i := range want {
							want[i] = 0.5 * c0[i]
						}
						got := append([]float64(nil), c0...)
						func() {
							defer func() {
								if r := recover(); r != nil {
									t.Fatalf("panic: %v", r)
								}
							}()
							mulW(mm.f, transB, m, n, k, a, l32, got, 0.5)
						}()
						rsSameBits(t, "c", got, want)
					})
				}
			}
		}
	}
}

// TestGemm32RowBlocks: the float32 products give the same bits whatever
// the row blocks c32Max cuts them into (ragged ones included), for every
// transpose combination, and stay within float32 rounding of matmul.
func TestGemm32RowBlocks(t *testing.T) {
	shapes := [][3]int{{13, 7, 5}, {40, 9, 33}, {1, 50, 3}, {31, 1, 17}, {64, 20, 128}, {200, 100, 128}}
	for si, sz := range shapes {
		m, n, k := sz[0], sz[1], sz[2]
		rng := rand.New(rand.NewPCG(uint64(si), 21))
		a, b := randSlice(rng, m*k, -1, 1), randSlice(rng, k*n, -1, 1)
		c0 := randSlice(rng, m*n, -2, 2)
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, beta := range []float64{0, 1, 0.5} {
					t.Run(fmt.Sprintf("%dx%dx%d/ta=%v/tb=%v/beta=%v", m, n, k, ta, tb, beta), func(t *testing.T) {
						prod := func(f func([]float64)) []float64 {
							c := append([]float64(nil), c0...)
							f(c)
							return c
						}
						mm32 := func(c []float64) { matmul32(ta, tb, m, n, k, a, b, c, beta) }
						ref := prod(mm32) // c32Max 1<<20: one block
						if m*n > c32Max {
							t.Fatalf("shape %v is blocked at the default c32Max", sz)
						}
						want := prod(func(c []float64) { matmul(ta, tb, m, n, k, a, b, c, beta) })
						scale := rsScale(ta, tb, m, n, k, a, b, c0, beta)
						rsCheckScaled(t, "matmul32 vs matmul", ref, want, scale, 1e-5)
						var bref []float64
						b32 := make([]float32, len(b))
						convertInto(b32, b)
						if !ta {
							bref = prod(func(c []float64) { matmulW32(false, tb, m, n, k, a, b32, c, beta) })
							rsSameBits(t, "matmulW32 vs matmul32", bref, ref)
						}
						for _, cm := range []int{5, 37, 64, 2 * n, 3*n + 1} {
							rsSetBlock(t, &c32Max, cm)
							what := fmt.Sprintf("c32Max=%d (rows per block %d)", cm, max(1, min(m, cm/n)))
							rsSameBits(t, "matmul32 "+what, prod(mm32), ref)
							if !ta {
								rsSameBits(t, "matmulW32 "+what, prod(func(c []float64) { matmulW32(false, tb, m, n, k, a, b32, c, beta) }), bref)
							}
						}
					})
				}
			}
		}
	}
}

// TestAccumulateF32RowBlocks: the probe-mode S1/S2 update (gemm32Into with
// a transposed a) is the same bit for bit in row blocks, and close to the
// float64 update.
func TestAccumulateF32RowBlocks(t *testing.T) {
	for _, sz := range [][3]int{{7, 5, 9}, {13, 11, 40}, {3, 40, 6}} {
		out, in, rows := sz[0], sz[1], sz[2]
		t.Run(fmt.Sprintf("%dx%d/rows%d", out, in, rows), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(out), uint64(in)))
			l := &onnxio.Layer{Name: "w", Out: out, In: in, W: randSlice(rng, out*in, -1, 1)}
			a := randSlice(rng, rows*in, -1, 1)
			g := randSlice(rng, rows*out, 0, 2)
			s1 := randSlice(rng, out*in, -1, 1)
			s2 := randSlice(rng, out*in, 0, 1)
			shift := randSlice(rng, in, -0.3, 0.3)
			acc := func(f32 bool) *LayerStats {
				ls := &LayerStats{Layer: l, Shift: append([]float64(nil), shift...), S0: make([]float64, out),
					S1: append([]float64(nil), s1...), S2: append([]float64(nil), s2...), SumA2: make([]float64, in)}
				ls.accumulate(a, g, nil, f32, nil)
				return ls
			}
			ref := acc(true)
			f64 := acc(false)
			// Scales: |S| + sum_r g |a - shift| (and its square).
			sc1, sc2 := make([]float64, out*in), make([]float64, out*in)
			for i := 0; i < out; i++ {
				for j := 0; j < in; j++ {
					sc1[i*in+j], sc2[i*in+j] = math.Abs(s1[i*in+j]), s2[i*in+j]
					for r := 0; r < rows; r++ {
						d := a[r*in+j] - shift[j]
						sc1[i*in+j] += g[r*out+i] * math.Abs(d)
						sc2[i*in+j] += g[r*out+i] * d * d
					}
				}
			}
			rsCheckScaled(t, "S1 f32 vs f64", ref.S1, f64.S1, sc1, 1e-5)
			rsCheckScaled(t, "S2 f32 vs f64", ref.S2, f64.S2, sc2, 1e-5)
			for _, cm := range []int{5, 37, in + 1} {
				rsSetBlock(t, &c32Max, cm)
				got := acc(true)
				rsSameBits(t, fmt.Sprintf("S1 c32Max=%d", cm), got.S1, ref.S1)
				rsSameBits(t, fmt.Sprintf("S2 c32Max=%d", cm), got.S2, ref.S2)
				rsSameBits(t, fmt.Sprintf("S0 c32Max=%d", cm), got.S0, ref.S0)
			}
		})
	}
}

// TestReluInPlaceValues: only a Dense output read by nothing but one Relu,
// and not a graph output, is marked; and a trace computed with the marks
// has the outputs of Run.
func TestReluInPlaceValues(t *testing.T) {
	type built struct {
		net  *onnxio.Network
		want []int // marked value ids
	}
	w := func(rng *rand.Rand, out, in int) []float64 { return randSlice(rng, out*in, -1, 1) }
	relu := onnxio.Op{Kind: onnxio.OpRelu}
	cases := []struct {
		name  string
		build func(rng *rand.Rand) built
	}{
		{"dense-relu", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), randSlice(rng, 5, -0.5, 0.5))
			r := b.op(relu, z)
			return built{b.outputs(b.dense(r, 3, 5, w(rng, 3, 5), nil)), []int{z}}
		}},
		{"relu-is-output", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			return built{b.outputs(b.op(relu, z)), []int{z}}
		}},
		{"dense-also-output", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			r := b.op(relu, z)
			return built{b.outputs(b.dense(r, 3, 5, w(rng, 3, 5), nil), z), nil}
		}},
		{"dense-output-only-relu-first", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			r := b.op(relu, z)
			return built{b.outputs(z, r), nil}
		}},
		{"residual", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 4, 4, w(rng, 4, 4), nil)
			r := b.op(relu, z)
			return built{b.outputs(b.op(onnxio.Op{Kind: onnxio.OpAdd}, r, z)), nil}
		}},
		{"residual-read-first", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 4, 4, w(rng, 4, 4), nil)
			s := b.op(onnxio.Op{Kind: onnxio.OpSigmoid}, z)
			r := b.op(relu, z)
			return built{b.outputs(b.op(onnxio.Op{Kind: onnxio.OpMul}, r, s)), nil}
		}},
		{"two-relus", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 4, 4, w(rng, 4, 4), nil)
			r1, r2 := b.op(relu, z), b.op(relu, z)
			return built{b.outputs(b.op(onnxio.Op{Kind: onnxio.OpAdd}, r1, r2)), nil}
		}},
		{"dense-tanh", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			h := b.op(onnxio.Op{Kind: onnxio.OpTanh}, z)
			return built{b.outputs(b.dense(h, 3, 5, w(rng, 3, 5), nil)), nil}
		}},
		{"dense-leakyrelu", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			h := b.op(onnxio.Op{Kind: onnxio.OpLeakyRelu, Alpha: 0.1}, z)
			return built{b.outputs(b.dense(h, 3, 5, w(rng, 3, 5), nil)), nil}
		}},
		{"relu-of-input", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			r := b.op(relu, x)
			return built{b.outputs(b.dense(r, 3, 4, w(rng, 3, 4), nil)), nil}
		}},
		{"relu-of-add", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 5, 4, w(rng, 5, 4), nil)
			s := b.op(onnxio.Op{Kind: onnxio.OpAdd, Const: &onnxio.Const{Name: "c", Shape: []int{}, Data: []float64{0.1}}}, z)
			r := b.op(relu, s)
			return built{b.outputs(b.dense(r, 3, 5, w(rng, 3, 5), nil)), nil}
		}},
		{"relu-of-reshape", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z := b.dense(x, 4, 4, w(rng, 4, 4), nil)
			s := b.op(onnxio.Op{Kind: onnxio.OpIdentity}, z)
			r := b.op(relu, s)
			return built{b.outputs(b.dense(r, 3, 4, w(rng, 3, 4), nil)), nil}
		}},
		{"mlp", func(rng *rand.Rand) built {
			b := newBuilder()
			x := b.input("x", -1, 4)
			z1 := b.dense(x, 6, 4, w(rng, 6, 4), randSlice(rng, 6, -0.5, 0.5))
			r1 := b.op(relu, z1)
			z2 := b.dense(r1, 5, 6, w(rng, 5, 6), randSlice(rng, 5, -0.5, 0.5))
			r2 := b.op(relu, z2)
			z3 := b.dense(r2, 3, 5, w(rng, 3, 5), nil)
			return built{b.outputs(z3), []int{z1, z2}}
		}},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 31))
			bt := c.build(rng)
			net := bt.net
			marks := reluInPlaceValues(net)
			if len(marks) != len(net.Values) {
				t.Fatalf("%d marks for %d values", len(marks), len(net.Values))
			}
			want := make([]bool, len(net.Values))
			for _, id := range bt.want {
				want[id] = true
			}
			for id := range marks {
				if marks[id] != want[id] {
					t.Errorf("value %d (%s): marked %v, want %v", id, net.Values[id].Name, marks[id], want[id])
				}
			}
			// Evaluating with the marks changes no output.
			x := NewTensor([]int{6, 4}, randSlice(rng, 24, -2, 2))
			xCopy := append([]float64(nil), x.Data...)
			ref := mustRun(t, net, x)
			tr, err := runTrace(net, []*Tensor{x}, nil, marks, nil)
			if err != nil {
				t.Fatal(err)
			}
			rsSameBits(t, "input after the runs", x.Data, xCopy)
			got, wantOuts := tr.Outputs(), ref.Outputs()
			for i := range wantOuts {
				if !SameShape(got[i].Shape, wantOuts[i].Shape) {
					t.Fatalf("output %d: shape %v, want %v", i, got[i].Shape, wantOuts[i].Shape)
				}
				rsSameBits(t, fmt.Sprintf("output %d", i), got[i].Data, wantOuts[i].Data)
			}
		})
	}
}

// rsMLP is an MLP of Dense+Relu pairs (one through Tanh) with a 4-wide
// output; w32 puts the weights of every layer in W32.
func rsMLP(rng *rand.Rand, w32 bool) *onnxio.Network {
	b := newBuilder()
	x := b.input("x", -1, 5)
	dense := func(h, out, in int) int {
		_, w := rsWeights(rng, out*in)
		return b.dense(h, out, in, w, randSlice(rng, out, -0.3, 0.3))
	}
	h := b.op(onnxio.Op{Kind: onnxio.OpRelu}, dense(x, 8, 5))
	h = b.op(onnxio.Op{Kind: onnxio.OpRelu}, dense(h, 7, 8))
	h = b.op(onnxio.Op{Kind: onnxio.OpTanh}, dense(h, 6, 7))
	h = b.op(onnxio.Op{Kind: onnxio.OpRelu}, dense(h, 6, 6))
	net := b.outputs(dense(h, 4, 6))
	if w32 {
		for _, l := range net.Layers {
			l.W32 = make([]float32, len(l.W))
			for i, v := range l.W {
				l.W32[i] = float32(v)
			}
			l.W = nil
		}
	}
	return net
}

// TestReluInPlaceTrace: a trace with the in-place Relus shares one tensor
// between each marked Dense output and its Relu, holding Run's Relu
// output; Run keeps the pre-activations apart.
func TestReluInPlaceTrace(t *testing.T) {
	for _, resident := range []bool{false, true} {
		for _, f32 := range []bool{false, true} {
			t.Run(fmt.Sprintf("W32=%v/f32=%v", resident, f32), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(41, 42))
				net := rsMLP(rng, resident)
				x := NewTensor([]int{9, 5}, randSlice(rng, 45, -2, 2))
				var w32 func(*onnxio.Layer) []float32
				if f32 {
					st := &Stats{w32: map[*onnxio.Layer][]float32{}}
					w32 = st.weights32
				}
				marks := reluInPlaceValues(net)
				ref, err := run(net, []*Tensor{x}, w32)
				if err != nil {
					t.Fatal(err)
				}
				tr, err := runTrace(net, []*Tensor{x}, w32, marks, nil)
				if err != nil {
					t.Fatal(err)
				}
				shared := 0
				for _, op := range net.Ops {
					if op.Kind != onnxio.OpRelu {
						continue
					}
					in := op.In[0]
					if !marks[in] {
						t.Errorf("Relu %s: its Dense input is not marked", op.Node)
						continue
					}
					shared++
					if tr.Values[op.Out] != tr.Values[in] {
						t.Errorf("Relu %s: in-place trace holds two tensors", op.Node)
					}
					rsSameBits(t, "in-place Relu "+op.Node, tr.Values[op.Out].Data, ref.Values[op.Out].Data)
					if ref.Values[op.Out] == ref.Values[in] {
						t.Errorf("Relu %s: Run's trace shares the pre-activation", op.Node)
					}
					neg := 0
					for q, v := range ref.Values[in].Data {
						if v < 0 {
							neg++
						}
						if want := max(v, 0); math.Float64bits(ref.Values[op.Out].Data[q]) != math.Float64bits(want) {
							t.Fatalf("Relu %s: Run's output [%d] = %v, max(pre-activation, 0) = %v", op.Node, q, ref.Values[op.Out].Data[q], want)
						}
					}
					if neg == 0 {
						t.Errorf("Relu %s: no negative pre-activation, the test shows nothing", op.Node)
					}
				}
				if shared != 3 {
					t.Errorf("%d Relus in place, want 3", shared)
				}
				rsSameBits(t, "output", tr.Outputs()[0].Data, ref.Outputs()[0].Data)
			})
		}
	}
}

// TestCollectReluInPlace: Collect with the in-place Relus (Observe nil)
// and without (a no-op Observe) gives the same statistics bit for bit, in
// exact reverse mode, forward mode and probes mode.
func TestCollectReluInPlace(t *testing.T) {
	for _, resident := range []bool{false, true} {
		for _, mode := range []struct {
			name string
			opt  StatsOptions
			want string
		}{
			{"reverse", StatsOptions{AD: ADReverse}, ADReverse},
			{"forward", StatsOptions{AD: ADForward}, ADForward},
			{"probes", StatsOptions{Probes: 2, Seed: 1}, "probes(2)"},
		} {
			t.Run(fmt.Sprintf("W32=%v/%s", resident, mode.name), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(51, 52))
				net := rsMLP(rng, resident)
				data := sliceData{x: randSlice(rng, 23*5, -2, 2), shape: []int{5}}
				collect := func(observe bool) *Stats {
					opt := mode.opt
					opt.Batch = 8 // 8 + 8 + 7
					observed := 0
					if observe {
						opt.Observe = func(st *Stats, b Batch, tr *Trace, g [][]float64) error {
							observed++
							return nil
						}
					}
					st, err := Collect(net, data, opt)
					if err != nil {
						t.Fatal(err)
					}
					if observe && observed != 3 {
						t.Errorf("Observe saw %d batches, want 3", observed)
					}
					return st
				}
				inPlace, apart := collect(false), collect(true)
				if inPlace.Mode.String() != mode.want || apart.Mode.String() != mode.want {
					t.Fatalf("modes %q and %q, want %q", inPlace.Mode, apart.Mode, mode.want)
				}
				if inPlace.N != 23 || apart.N != 23 {
					t.Fatalf("N = %d and %d, want 23", inPlace.N, apart.N)
				}
				if len(inPlace.Layers) != 5 || len(apart.Layers) != 5 {
					t.Fatalf("%d and %d layers, want 5", len(inPlace.Layers), len(apart.Layers))
				}
				for i, ls := range inPlace.Layers {
					o := apart.Layers[i]
					name := ls.Layer.Name
					rsSameBits(t, name+" Shift", ls.Shift, o.Shift)
					rsSameBits(t, name+" S0", ls.S0, o.S0)
					rsSameBits(t, name+" S1", ls.S1, o.S1)
					rsSameBits(t, name+" S2", ls.S2, o.S2)
					rsSameBits(t, name+" SumA2", ls.SumA2, o.SumA2)
					nz := 0
					for _, v := range ls.S0 {
						if v != 0 {
							nz++
						}
					}
					if nz == 0 {
						t.Errorf("%s: S0 all zero, the test shows nothing", name)
					}
				}
			})
		}
	}
}
