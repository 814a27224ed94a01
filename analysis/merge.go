package analysis

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/ecprune/ecprune/onnxio"
)

// Merge adds the statistics of other, computed on other samples of the
// same layer, into ls, so that statistics of shards of the calibration set
// add up to those of the whole set (to float64 rounding). other's S1 and
// S2 are sums on activations shifted by its own Shift c'; they are moved
// to ls's Shift c before adding, element by element with d = c' - c:
//
//	S1 += S1' + S0' d
//	S2 += S2' + 2 d S1' + S0' d^2
//
// An ls without samples (nil Shift) takes other's shift.
func (ls *LayerStats) Merge(other *LayerStats) error {
	l := ls.Layer
	if l == nil || other.Layer == nil || l.In != other.Layer.In || l.Out != other.Layer.Out {
		return fmt.Errorf("merging statistics of layers of different shapes")
	}
	if (ls.GradW == nil) != (other.GradW == nil) {
		return fmt.Errorf("merging statistics of layer %s with and without loss gradients", l.WeightInit)
	}
	if other.Shift == nil {
		return nil // no samples
	}
	if ls.Shift == nil {
		ls.Shift = append([]float64(nil), other.Shift...)
	}
	in := l.In
	d := make([]float64, in)
	for j := range d {
		d[j] = other.Shift[j] - ls.Shift[j]
	}
	for i := 0; i < l.Out; i++ {
		s0 := other.S0[i]
		ls.S0[i] += s0
		s1, s2 := other.S1[i*in:(i+1)*in], other.S2[i*in:(i+1)*in]
		t1, t2 := ls.S1[i*in:(i+1)*in], ls.S2[i*in:(i+1)*in]
		for j, dj := range d {
			t2[j] += s2[j] + 2*dj*s1[j] + s0*dj*dj
			t1[j] += s1[j] + s0*dj
		}
	}
	for j, v := range other.SumA2 {
		ls.SumA2[j] += v
	}
	for q, v := range other.GradW {
		ls.GradW[q] += v
	}
	return nil
}

// Merge adds other, the statistics of other samples of the same network
// with the same objective and derivatives, into s: N, Passes and every
// layer's sums (LayerStats.Merge). Layers are matched by position and
// must have the same shapes.
func (s *Stats) Merge(other *Stats) error {
	if len(s.Layers) != len(other.Layers) {
		return fmt.Errorf("merging statistics of %d and %d layers", len(s.Layers), len(other.Layers))
	}
	if s.Objective != other.Objective || s.Mode != other.Mode {
		return fmt.Errorf("merging statistics of objective %s, derivatives %s with objective %s, derivatives %s",
			s.Objective, s.Mode, other.Objective, other.Mode)
	}
	for i, ls := range s.Layers {
		if err := ls.Merge(other.Layers[i]); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	s.N += other.N
	s.Passes += other.Passes
	return nil
}

// The serialised form of Stats (WriteTo, ReadStats), little-endian:
//
//	"ECPSTAT1"
//	N, Passes                      int64
//	Objective, Mode.Kind           string (uint32 length, bytes)
//	Mode.Probes                    int64
//	layer count                    uint32
//	per layer, in Stats.Layers order:
//	  WeightInit                   string
//	  Op, In, Out                  int64
//	  flags                        uint8: 1 Shift present, 2 GradW present
//	  Shift [In] if present, S0 [Out], S1 [Out*In], S2 [Out*In],
//	  SumA2 [In], GradW [Out*In] if present      float64
const statsMagic = "ECPSTAT1"

// WriteTo writes the statistics in the binary form above; the network is
// not included (ReadStats is given it).
func (s *Stats) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<16)}
	cw.bytes([]byte(statsMagic))
	cw.i64(int64(s.N))
	cw.i64(int64(s.Passes))
	cw.str(string(s.Objective))
	cw.str(string(s.Mode.Kind))
	cw.i64(int64(s.Mode.Probes))
	cw.u32(uint32(len(s.Layers)))
	for _, ls := range s.Layers {
		l := ls.Layer
		cw.str(l.WeightInit)
		cw.i64(int64(ls.Op))
		cw.i64(int64(l.In))
		cw.i64(int64(l.Out))
		var flags uint8
		if ls.Shift != nil {
			flags |= 1
		}
		if ls.GradW != nil {
			flags |= 2
		}
		cw.bytes([]byte{flags})
		for _, a := range [][]float64{ls.Shift, ls.S0, ls.S1, ls.S2, ls.SumA2, ls.GradW} {
			cw.floats(a)
		}
	}
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	if cw.err != nil {
		return cw.n, fmt.Errorf("writing statistics: %w", cw.err)
	}
	return cw.n, nil
}

// ReadStats reads statistics written by WriteTo for the network net: the
// layers must be net's prunable Dense layers, in order, by weight name and
// shape.
func ReadStats(r io.Reader, net *onnxio.Network) (*Stats, error) {
	cr := &countReader{r: bufio.NewReaderSize(r, 1<<16)}
	st, err := readStats(cr, net)
	if err != nil {
		return nil, fmt.Errorf("reading statistics: %w", err)
	}
	return st, nil
}

func readStats(cr *countReader, net *onnxio.Network) (*Stats, error) {
	if string(cr.bytes(len(statsMagic))) != statsMagic {
		if cr.err != nil {
			return nil, cr.err
		}
		return nil, errors.New("not an ecprune statistics file")
	}
	st := &Stats{Net: net}
	st.N = int(cr.i64())
	st.Passes = int(cr.i64())
	st.Objective = Objective(cr.str())
	st.Mode.Kind = DerivKind(cr.str())
	st.Mode.Probes = int(cr.i64())
	nl := int(cr.u32())
	if cr.err != nil {
		return nil, cr.err
	}
	var dense []int
	for i, op := range net.Ops {
		if op.Kind == onnxio.OpDense && op.Layer.Prunable {
			dense = append(dense, i)
		}
	}
	if nl != len(dense) {
		return nil, fmt.Errorf("%d layers, the network has %d prunable ones", nl, len(dense))
	}
	for _, opi := range dense {
		l := net.Ops[opi].Layer
		name := cr.str()
		op, in, out := cr.i64(), cr.i64(), cr.i64()
		flags := cr.bytes(1)
		if cr.err != nil {
			return nil, cr.err
		}
		if name != l.WeightInit || op != int64(opi) || in != int64(l.In) || out != int64(l.Out) {
			return nil, fmt.Errorf("layer %s (op %d, %dx%d) where the network has %s (op %d, %dx%d)",
				name, op, out, in, l.WeightInit, opi, l.Out, l.In)
		}
		ls := &LayerStats{Layer: l, Op: opi}
		if flags[0]&1 != 0 {
			ls.Shift = cr.floats(l.In)
		}
		ls.S0 = cr.floats(l.Out)
		ls.S1 = cr.floats(l.Out * l.In)
		ls.S2 = cr.floats(l.Out * l.In)
		ls.SumA2 = cr.floats(l.In)
		if flags[0]&2 != 0 {
			ls.GradW = cr.floats(l.Out * l.In)
		}
		if cr.err != nil {
			return nil, cr.err
		}
		st.Layers = append(st.Layers, ls)
	}
	return st, nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
	buf [8]byte
}

func (c *countWriter) bytes(b []byte) {
	if c.err != nil {
		return
	}
	k, err := c.w.Write(b)
	c.n += int64(k)
	c.err = err
}

func (c *countWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(c.buf[:4], v)
	c.bytes(c.buf[:4])
}

func (c *countWriter) i64(v int64) {
	binary.LittleEndian.PutUint64(c.buf[:], uint64(v))
	c.bytes(c.buf[:])
}

func (c *countWriter) str(s string) {
	c.u32(uint32(len(s)))
	c.bytes([]byte(s))
}

func (c *countWriter) floats(a []float64) {
	for _, v := range a {
		binary.LittleEndian.PutUint64(c.buf[:], math.Float64bits(v))
		c.bytes(c.buf[:])
	}
}

type countReader struct {
	r   io.Reader
	err error
}

func (c *countReader) bytes(n int) []byte {
	if c.err != nil {
		return make([]byte, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.err = err
	}
	return b
}

func (c *countReader) u32() uint32 { return binary.LittleEndian.Uint32(c.bytes(4)) }
func (c *countReader) i64() int64  { return int64(binary.LittleEndian.Uint64(c.bytes(8))) }

// str reads a string of at most 1 MiB (names), so a corrupt length cannot
// ask for a huge allocation.
func (c *countReader) str() string {
	n := c.u32()
	if n > 1<<20 {
		if c.err == nil {
			c.err = fmt.Errorf("a name of %d bytes", n)
		}
		return ""
	}
	return string(c.bytes(int(n)))
}

// floats reads n float64s in pieces, so a truncated file fails before
// much is allocated.
func (c *countReader) floats(n int) []float64 {
	out := make([]float64, 0, min(n, 1<<16))
	var b [8 << 10]byte
	for len(out) < n && c.err == nil {
		k := min(n-len(out), len(b)/8)
		if _, err := io.ReadFull(c.r, b[:8*k]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = err
			break
		}
		for q := 0; q < k; q++ {
			out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(b[8*q:])))
		}
	}
	return out
}
