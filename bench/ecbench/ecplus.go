package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// ecplusResult is what `ecbench ecplus` prints (one JSON line): the
// one-shot ec analysis and the whole of ec+ (the same analysis keeping
// what ec+ reuses, then its selection and refit), timed in one process
// on the same data, and their ratio (the bound: at most 5).
type ecplusResult struct {
	Model     string  `json:"model"`
	Samples   int     `json:"samples"`
	Mode      string  `json:"mode"`
	Sparsity  float64 `json:"sparsity"`
	Reps      int     `json:"reps"`
	EC        float64 `json:"ec_seconds"`     // Collect + ec scores (median)
	ECPlus    float64 `json:"ecplus_seconds"` // Collect (with prep) + ec scores + ECPlus (median)
	Sequence  float64 `json:"ecplus_sequential_seconds"`
	Ratio     float64 `json:"ratio"`
	Removed   int     `json:"removed"`
	Objective string  `json:"task"`
}

// cmdECPlus times ec and ec+ on one model, alternating, with the options
// `ecprune prune` uses by default.
func cmdECPlus(args []string) error {
	fs := flag.NewFlagSet("ecplus", flag.ExitOnError)
	probes := fs.Int("probes", 0, "random-sign probes (0: exact)")
	batch := fs.Int("batch", 256, "samples per batch")
	limit := fs.Int("limit", 0, "use at most this many samples")
	sparsity := fs.Float64("sparsity", 0.9, "global sparsity")
	task := fs.String("task", "regression", "classification or regression (how ec+ refits)")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile from the first ec+ run on")
	verbose := fs.Bool("v", false, "ec+'s log lines on stderr")
	refit := fs.Int("refit", ecplus.DefaultOptions().RefitSteps, "ec+'s refit steps (--ecplus-refit)")
	reps := fs.Int("reps", 3, "timed runs of each (ec, then ec+, alternating), at least; medians are reported")
	minSec := fs.Float64("min-seconds", 2, "keep alternating until this much time is spent (at most 200 runs): a few milliseconds per run need many runs for a steady median")
	warmup := fs.Bool("warmup", true, "run the analysis once untimed first")
	fs.Parse(args)
	if fs.NArg() != 2 {
		return fmt.Errorf("ecplus MODEL X.npy")
	}
	_, net, src, err := loadWorkload(fs.Arg(0), fs.Arg(1), *batch, *limit)
	if err != nil {
		return err
	}
	defer src.Close()
	data := calib.Data{Src: src}
	ec, _ := analysis.CriterionByName("ec")
	// As ecprune prune does: probes read float32 weights in the file's bytes.
	sopt := analysis.StatsOptions{Probes: *probes, Batch: *batch}
	tk := analysis.Task(*task)
	logf := func(string, ...any) {}
	if *verbose {
		t0 := time.Now()
		logf = func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "%8.3fs "+f+"\n", append([]any{time.Since(t0).Seconds()}, a...)...)
		}
	}
	runEC := func() error {
		st, err := analysis.Collect(net, data, sopt)
		if err != nil {
			return err
		}
		_, err = ec.Score(st, 0)
		return err
	}
	if *warmup {
		// One untimed analysis, so that neither side pays for the
		// process's first allocations and page faults.
		if err := runEC(); err != nil {
			return err
		}
	}
	var tECs, tPluses, tSeqs []float64
	var plan *prune.Plan
	var st *analysis.Stats
	start := time.Now()
	for rep := 0; rep < *reps || (time.Since(start).Seconds() < *minSec && rep < 200); rep++ {
		t := time.Now()
		if err := runEC(); err != nil {
			return err
		}
		tECs = append(tECs, time.Since(t).Seconds())

		if *cpuprof != "" && rep == 0 {
			f, err := os.Create(*cpuprof)
			if err != nil {
				return err
			}
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		t = time.Now()
		prep := ecplus.NewPrep(net, data, tk)
		so := sopt
		so.Observe = prep.Observe
		var err error
		if st, err = analysis.Collect(net, data, so); err != nil {
			return err
		}
		sc, err := ec.Score(st, 0)
		if err != nil {
			return err
		}
		ts := time.Now()
		eo := ecplus.DefaultOptions()
		eo.RefitSteps, eo.Prep = *refit, prep
		if plan, err = ecplus.Prune(net, data, st, sc, prune.Options{Sparsity: *sparsity}, eo, tk, logf); err != nil {
			return err
		}
		tPluses = append(tPluses, time.Since(t).Seconds())
		tSeqs = append(tSeqs, time.Since(ts).Seconds())
		logf = func(string, ...any) {}
	}
	tEC, tPlus := medianOf(tECs), medianOf(tPluses)
	r := ecplusResult{Model: fs.Arg(0), Samples: st.N, Mode: st.Mode.String(), Sparsity: *sparsity, Reps: len(tECs), EC: tEC, ECPlus: tPlus,
		Sequence: medianOf(tSeqs), Ratio: tPlus / tEC, Removed: plan.Removed, Objective: *task}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// medianOf is the median of xs (the upper one of an even count).
func medianOf(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
