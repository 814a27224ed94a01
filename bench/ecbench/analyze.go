package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/onnxio"
)

// analyzeResult is what `ecbench analyze` prints (one JSON line).
type analyzeResult struct {
	Model    string  `json:"model"`
	Samples  int     `json:"samples"`
	Mode     string  `json:"mode"`
	Dirs     int     `json:"directions"` // cotangent directions per sample
	Seconds  float64 `json:"seconds"`    // statistics + importance + delta
	Collect  float64 `json:"collect_seconds"`
	Flops    float64 `json:"flops"` // operation count of the algorithm
	GFlops   float64 `json:"gflops"`
	Load     float64 `json:"load_seconds"`
	Checksum float64 `json:"checksum"` // sum of importances (keeps the work alive)
}

// cmdAnalyze loads a model and calibration data the way `ecprune prune`
// does, then times analysis.Collect and ECImportance of every layer.
func cmdAnalyze(args []string) error {
	fs := flag.NewFlagSet("analyze", flag.ExitOnError)
	probes := fs.Int("probes", 0, "random-sign probes (0: exact)")
	batch := fs.Int("batch", 256, "samples per batch")
	limit := fs.Int("limit", 0, "use at most this many samples")
	ad := fs.String("ad", "auto", "auto, forward or reverse")
	maxTan := fs.Int("max-tangent", 0, "StatsOptions.MaxTangent (0: default)")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile")
	memprof := fs.String("memprofile", "", "write an allocation profile (every allocation sampled) of the timed part")
	fs.Parse(args)
	if fs.NArg() != 2 {
		return fmt.Errorf("analyze MODEL X.npy")
	}
	t0 := time.Now()
	_, net, src, err := loadWorkload(fs.Arg(0), fs.Arg(1), *batch, *limit)
	if err != nil {
		return err
	}
	defer src.Close()
	load := time.Since(t0)
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *memprof != "" {
		runtime.MemProfileRate = 1
		defer func() {
			runtime.GC() // the profile shows the allocations up to the last collection
			if f, err := os.Create(*memprof); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	t := time.Now()
	// As ecprune prune does: the probes' float32 products read the weights
	// in the protobuf's bytes (no float32 copy), and the importances are
	// computed in the storage of S1/S2 (ECImportanceInPlace).
	st, err := analysis.Collect(net, calib.Data{Src: src}, analysis.StatsOptions{AD: *ad, Probes: *probes, Batch: *batch, MaxTangent: *maxTan})
	if err != nil {
		return err
	}
	collect := time.Since(t)
	var sum float64
	for _, ls := range st.Layers {
		imp, delta := ls.ECImportanceInPlace(st.N)
		for q := range imp {
			sum += imp[q] + 0*delta[q]
		}
	}
	secs := time.Since(t).Seconds()
	dirs, flops := opCount(net, st)
	r := analyzeResult{Model: fs.Arg(0), Samples: st.N, Mode: st.Mode.String(), Dirs: dirs, Seconds: secs, Collect: collect.Seconds(),
		Flops: flops, GFlops: flops / secs / 1e9, Load: load.Seconds(), Checksum: sum}
	runtime.KeepAlive(net)
	return json.NewEncoder(os.Stdout).Encode(r)
}

// tuneGC is ecprune's (cmd/ecprune/main.go), so that the figures measure
// what ecprune does.
func tuneGC(net *onnxio.Network) {
	if pct := analysis.GCPercent(net); pct < 100 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(pct)
	}
}

// opCount is the operation count of the algorithm on a chain of dense
// layers (what the benchmark models are): multiply-adds count 2.
//
//	forward pass        2 N sum_l In_l Out_l
//	reverse, D dirs     2 D N sum_{l after the first prunable} In_l Out_l
//	forward mode        2 N sum_{p prunable} Out_p sum_{l after p} In_l Out_l
//	S1 and S2           4 N sum_{p prunable} In_p Out_p
//
// D is K (exact reverse) or P (probes). Elementwise work is not counted.
func opCount(net *onnxio.Network, st *analysis.Stats) (dirs int, flops float64) {
	n := float64(st.N)
	k := net.Layers[len(net.Layers)-1].Out // K of a chain
	size := func(l *onnxio.Layer) float64 { return float64(l.In) * float64(l.Out) }
	first := -1
	for i, l := range net.Layers {
		flops += 2 * n * size(l)
		if l.Prunable {
			flops += 4 * n * size(l)
			if first < 0 {
				first = i
			}
		}
	}
	after := func(i int) float64 {
		var s float64
		for _, l := range net.Layers[i+1:] {
			s += size(l)
		}
		return s
	}
	switch {
	case st.Mode.Kind == analysis.DerivForward:
		for i, l := range net.Layers {
			if l.Prunable {
				dirs += l.Out
				flops += 2 * n * float64(l.Out) * after(i)
			}
		}
	case st.Mode.Kind == analysis.DerivReverse:
		dirs = k
		flops += 2 * float64(dirs) * n * after(first)
	default: // probes
		dirs = st.Mode.Probes
		flops += 2 * float64(dirs) * n * after(first)
	}
	return dirs, flops
}
