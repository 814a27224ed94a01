package gemm

import "testing"

// BenchmarkPack: the packing routines on one kc x nc block (kc = 256,
// nc = 4096), in ns per element.
func BenchmarkPack(b *testing.B) {
	const kc, nc, mr, nr = 256, 4096, 14, 32
	src := randF32(kc * nc)
	dst := make([]float32, kc*nc+kc*nr)
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"B", func() {
			for jp := 0; jp < nc/nr; jp++ {
				packB(false, src, nc, 0, kc, jp*nr, nr, nr, dst[jp*nr*kc:])
			}
		}},
		{"BT", func() {
			for jp := 0; jp < nc/nr; jp++ {
				packB(true, src, kc, 0, kc, jp*nr, nr, nr, dst[jp*nr*kc:])
			}
		}},
		{"BTasm", func() {
			s, _ := available()
			if s[0].packBT == nil || s[0].nr != nr {
				b.Skip("no assembly packing of B^T for 32 columns")
			}
			for jp := 0; jp < nc/nr; jp++ {
				s[0].packBT(kc, src[jp*nr*kc:], kc, dst[jp*nr*kc:])
			}
		}},
		{"A", func() { packA(false, src, kc, 0, nc-nc%mr, 0, kc, mr, dst) }},
		{"AT", func() { packA(true, src, nc, 0, nc-nc%mr, 0, kc, mr, dst) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.f()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(kc*nc), "ns/elem")
		})
	}
}
