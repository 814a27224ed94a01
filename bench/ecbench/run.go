package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/onnxio"
)

// An impl is one way of running the ec analysis: an ecprune build (in
// process, `ecbench analyze`, and as the whole `ecprune prune` command)
// or the PyTorch peer in one precision.
type impl struct {
	name    string
	ecbench string // ecbench binary of the build ("" for torch)
	ecprune string
	env     []string
	dtype   string // torch: float32 or float64
}

func (im impl) torch() bool { return im.ecbench == "" }

// A workload is a model with its calibration data.
type workload struct {
	key, desc string
	model     string
	calib     string
	samples   int
	probes    int
	params    int64
	flops     float64 // operation count of the analysis (see opCount)
	dirs      int
}

// proc is one measured process.
type proc struct {
	wall   float64 // whole process, seconds
	rssMB  float64 // peak resident set, MiB
	inner  float64 // analysis seconds reported by the process itself
	stdout []byte
}

type runner struct {
	python   string
	peer     string
	work     string
	repeats  int
	verbose  bool
	out      io.Writer
	timeTool string
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	shared := fs.String("shared", "../shared", "the shared folder (models/, data/); testdata/ copies are used where it lacks them")
	work := fs.String("work", "bench/out", "where generated models, data and outputs go")
	bin := fs.String("bin", "bench/out/bin", "folder of the built binaries (ecprune, ecbench, and their _openblas twins)")
	python := fs.String("python", "/usr/bin/python3", "Python with torch, numpy and onnx")
	repeats := fs.Int("repeats", 3, "runs of each measurement on (a) and (b), alternating implementations; the median is shown")
	repeatsC := fs.Int("repeats-c", 3, "runs of the ec analysis on (c) (the whole-process runs on (c) are done once)")
	probes := fs.Int("probes", 16, "random-sign probes on (c) (ecprune --probes, torch_peer --probes)")
	samplesC := fs.Int("samples", 2048, "calibration samples of (c)")
	scaling := fs.String("scaling", "512,1024,2048,4096", "sample counts of the scaling table on (c) (empty: none)")
	scalingDefault := fs.Bool("scaling-default", false, "also run the pure-Go build in the scaling table (slow)")
	only := fs.String("only", "a,b,c,p", "workloads to run (p: the bundled PDE model, in the ec+ table only)")
	verbose := fs.Bool("v", false, "print every command")
	results := fs.String("o", "bench/out/results.md", "also write the tables here")
	ecplus := fs.Bool("ecplus", true, "also time ec+ against the ec analysis (the cost bound)")
	ecplusOnly := fs.Bool("ecplus-only", false, "only the ec+ table")
	fs.Parse(args)

	r := &runner{python: *python, peer: "bench/torch_peer.py", work: *work, repeats: *repeats, verbose: *verbose}
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		r.timeTool = "/usr/bin/time"
	}
	var buf bytes.Buffer
	r.out = io.MultiWriter(os.Stdout, &buf)
	if err := os.MkdirAll(*work, 0o755); err != nil {
		return err
	}

	// Implementations.
	obEnv := []string{"OPENBLAS_CORETYPE=SkylakeX"}
	impls := []impl{{name: "ecprune pure Go (default)", ecbench: filepath.Join(*bin, "ecbench"), ecprune: filepath.Join(*bin, "ecprune")}}
	if _, err := os.Stat(filepath.Join(*bin, "ecbench_openblas")); err == nil {
		impls = append(impls, impl{name: "ecprune OpenBLAS", ecbench: filepath.Join(*bin, "ecbench_openblas"), ecprune: filepath.Join(*bin, "ecprune_openblas"), env: obEnv})
	} else {
		fmt.Fprintln(r.out, "note: no OpenBLAS build (bench/run.sh builds it when libopenblas-dev and cgo are there)")
	}
	haveTorch := exec.Command(*python, "-c", "import torch, onnx, numpy").Run() == nil
	if haveTorch {
		// The peer gets the same OpenBLAS settings as ecprune's OpenBLAS
		// build: torch's matrix products go to the same library.
		impls = append(impls, impl{name: "torch fp32", dtype: "float32", env: obEnv}, impl{name: "torch fp64", dtype: "float64", env: obEnv})
	} else {
		fmt.Fprintf(r.out, "note: %s cannot import torch, onnx and numpy: no PyTorch peer (apt-get install -y python3-torch python3-onnx)\n", *python)
	}

	// Workloads.
	modelA, err := firstExisting(filepath.Join(*shared, "models/mnist_mlp_gemm.onnx"), "testdata/models/mnist_mlp_gemm.onnx")
	if err != nil {
		return err
	}
	digits, err := firstExisting(filepath.Join(*shared, "data/mnist/calib_x.npy"))
	if err != nil {
		digits = filepath.Join(*work, "uniform_1000x784.npy")
		fmt.Fprintf(r.out, "note: %s/data/mnist/calib_x.npy not found: (a) and (b) use 1000 uniform [0,1) samples instead of digits\n", *shared)
		if err := genUniform(digits, 1000, 784, 2); err != nil {
			return err
		}
	}
	counts := []int{*samplesC}
	for _, s := range strings.Split(*scaling, ",") {
		if s = strings.TrimSpace(s); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("--scaling %q", *scaling)
			}
			counts = append(counts, n)
		}
	}
	fmt.Fprintf(r.out, "generating the benchmark models and data in %s (once)...\n", *work)
	for _, sizes := range [][]int64{sizesB, sizesC} {
		if err := genModel(*work, sizes); err != nil {
			return err
		}
	}
	for _, n := range counts {
		if err := genNormal(normalPath(*work, n, int(sizesC[0])), n, int(sizesC[0]), 1); err != nil {
			return err
		}
	}
	modelP, err := firstExisting(filepath.Join(*shared, "models/pde_mlp.onnx"), "testdata/models/pde_mlp.onnx")
	if err != nil {
		return err
	}
	dataP, err := firstExisting(filepath.Join(*shared, "data/pde/calib_x.npy"), "testdata/data/pde_calib_x.npy")
	if err != nil {
		return err
	}
	wl := map[string]*workload{
		"p": {key: "p", desc: "pde_mlp 2-64-64-64-1 (bundled)", model: modelP, calib: dataP},
		"a": {key: "a", desc: "(a) mnist_mlp_gemm 784-300-100-10", model: modelA, calib: digits},
		"b": {key: "b", desc: "(b) testmodels MLP 784-1024-1024-10", model: modelPath(*work, sizesB), calib: digits},
		"c": {key: "c", desc: "(c) MLP 1024-4096x3-1024, untrained", model: modelPath(*work, sizesC), calib: normalPath(*work, *samplesC, int(sizesC[0])), probes: *probes},
	}
	for _, w := range wl {
		if err := w.count(); err != nil {
			return err
		}
	}

	fmt.Fprintf(r.out, "\n# ecprune benchmark\n\n%s\n\n", machine())
	fmt.Fprintf(r.out, "OpenBLAS build and torch run with OPENBLAS_CORETYPE=SkylakeX; torch threads = %d. "+
		"Times are medians of alternating runs; ratios are ecprune/torch of those medians.\n", runtime.NumCPU())

	if *ecplusOnly {
		if err := r.ecplusTable(impls, wl, *only, *repeats); err != nil {
			return err
		}
		return os.WriteFile(*results, buf.Bytes(), 0o644)
	}

	// 1. Exactness: importances of ecprune and torch (float64) on (a), (b).
	if haveTorch {
		fmt.Fprintf(r.out, "\n## Same importances (exact reverse mode, float64)\n\n| model | max relative difference ecprune vs torch (importance, delta; per layer, relative to the layer's largest) | within 1e-6 |\n|---|---|---|\n")
		for _, k := range []string{"a", "b"} {
			if !strings.Contains(*only, k) {
				continue
			}
			w := wl[k]
			scores := filepath.Join(*work, "scores_"+k+".npz")
			if _, err := r.run(nil, impls[0].ecprune, "prune", "--method", "ec", w.model, "-o", filepath.Join(*work, "pruned_"+k+".onnx"), "--calib", w.calib, "--sparsity", "0.5", "--scores", scores, "-q"); err != nil {
				return err
			}
			p, err := r.run(obEnv, r.python, r.peer, w.model, w.calib, "--dtype", "float64", "--compare", scores)
			var res struct {
				Compare struct {
					Max map[string]float64 `json:"max_rel_err"`
					OK  bool               `json:"ok"`
				} `json:"compare"`
			}
			if p != nil {
				json.Unmarshal(lastLine(p.stdout), &res)
			}
			worst := 0.0
			for _, v := range res.Compare.Max {
				worst = math.Max(worst, v)
			}
			fmt.Fprintf(r.out, "| %s | %.2g | %v |\n", w.desc, worst, err == nil && res.Compare.OK)
		}
	}

	// 2. The ec analysis and the whole prune command.
	type row struct {
		w        *workload
		im       impl
		analysis proc
		whole    proc
	}
	var rows []row
	for _, k := range []string{"a", "b", "c"} {
		if !strings.Contains(*only, k) {
			continue
		}
		w := wl[k]
		fmt.Fprintf(os.Stderr, "measuring %s ...\n", w.desc)
		reps := r.repeats
		if k == "c" {
			reps = *repeatsC
		}
		an := make([][]proc, len(impls))
		for rep := 0; rep < reps; rep++ {
			for i, im := range impls {
				p, err := r.analysis(im, w, 0)
				if err != nil {
					return err
				}
				an[i] = append(an[i], *p)
			}
		}
		whReps := r.repeats
		if k == "c" {
			whReps = 1
		}
		wh := make([][]proc, len(impls))
		for rep := 0; rep < whReps; rep++ {
			for i, im := range impls {
				p, err := r.whole(im, w)
				if err != nil {
					return err
				}
				wh[i] = append(wh[i], *p)
			}
		}
		for i, im := range impls {
			rows = append(rows, row{w: w, im: im, analysis: median(an[i]), whole: median(wh[i])})
		}
	}
	find := func(w *workload, name string) *row {
		for i := range rows {
			if rows[i].w == w && rows[i].im.name == name {
				return &rows[i]
			}
		}
		return nil
	}
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	fmt.Fprintf(r.out, "\n## ec analysis: statistics S0/S1/S2 + importance + delta (model and data loaded before the clock starts)\n\n")
	fmt.Fprintf(r.out, "| model | samples | directions | GFLOP | implementation | seconds | GFLOP/s | peak RSS MiB | RSS / (6 x model file + calibration file) | / torch fp32 | / torch fp64 |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range rows {
		t32, t64 := find(x.w, "torch fp32"), find(x.w, "torch fp64")
		r32, r64 := "-", "-"
		if t32 != nil && !x.im.torch() {
			r32 = ratio(x.analysis.inner, t32.analysis.inner)
		}
		if t64 != nil && !x.im.torch() {
			r64 = ratio(x.analysis.inner, t64.analysis.inner)
		}
		fmt.Fprintf(r.out, "| %s | %d | %d | %.1f | %s | %.3g | %.1f | %.0f | %.2f | %s | %s |\n", x.w.desc, x.w.samples, x.w.dirs, x.w.flops/1e9,
			x.im.name, x.analysis.inner, x.w.flops/x.analysis.inner/1e9, x.analysis.rssMB, x.analysis.rssMB/x.w.boundMB(), r32, r64)
	}
	fmt.Fprintf(r.out, "\n## Whole process: `ecprune prune --method ec --sparsity 0.5` (load, analysis, selection, write, evaluation) vs the whole PyTorch peer process (interpreter start, imports, load, analysis)\n\n")
	fmt.Fprintf(r.out, "| model | implementation | process seconds | GFLOP/s (analysis op count / process time) | peak RSS MiB | RSS / (6 x model file + calibration file) | / torch fp32 process | / torch fp64 process |\n|---|---|---|---|---|---|---|---|\n")
	for _, x := range rows {
		t32, t64 := find(x.w, "torch fp32"), find(x.w, "torch fp64")
		r32, r64 := "-", "-"
		if t32 != nil && !x.im.torch() {
			r32 = ratio(x.whole.wall, t32.whole.wall)
		}
		if t64 != nil && !x.im.torch() {
			r64 = ratio(x.whole.wall, t64.whole.wall)
		}
		fmt.Fprintf(r.out, "| %s | %s | %.3g | %.1f | %.0f | %.1f | %s | %s |\n", x.w.desc, x.im.name, x.whole.wall, x.w.flops/x.whole.wall/1e9,
			x.whole.rssMB, x.whole.rssMB/x.w.boundMB(), r32, r64)
	}

	// 3. Scaling on (c).
	if strings.Contains(*only, "c") && *scaling != "" {
		fmt.Fprintf(r.out, "\n## Scaling on (c): ec analysis, %d probes, one run each\n\n", *probes)
		var sc []impl
		for _, im := range impls {
			if im.name == "torch fp64" || (im.name == "ecprune pure Go (default)" && !*scalingDefault && len(impls) > 1) {
				continue
			}
			sc = append(sc, im)
		}
		fmt.Fprintf(r.out, "| samples | GFLOP |")
		for _, im := range sc {
			fmt.Fprintf(r.out, " %s s | ms/sample | peak RSS MiB |", im.name)
		}
		fmt.Fprintf(r.out, "\n|---|---|%s\n", strings.Repeat("---|---|---|", len(sc)))
		for _, n := range counts[1:] {
			w := *wl["c"]
			w.calib = normalPath(*work, n, int(sizesC[0]))
			if err := w.count(); err != nil {
				return err
			}
			fmt.Fprintf(r.out, "| %d | %.0f |", n, w.flops/1e9)
			for _, im := range sc {
				p, err := r.analysis(im, &w, 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(r.out, " %.3g | %.2f | %.0f |", p.inner, 1000*p.inner/float64(n), p.rssMB)
			}
			fmt.Fprintln(r.out)
		}
		fmt.Fprintf(r.out, "\nAcross models (ec analysis, from the table above):\n\n| model | parameters | GFLOP per sample | implementation | ms per sample | ns per (parameter x sample) |\n|---|---|---|---|---|---|\n")
		for _, x := range rows {
			ms := 1000 * x.analysis.inner / float64(x.w.samples)
			fmt.Fprintf(r.out, "| %s | %d | %.3g | %s | %.3g | %.3g |\n", x.w.desc, x.w.params, x.w.flops/float64(x.w.samples)/1e9, x.im.name, ms,
				1e9*x.analysis.inner/float64(x.w.samples)/float64(x.w.params))
		}
	}
	// 4. ec+ against the one-shot ec analysis, in one process each.
	if *ecplus {
		if err := r.ecplusTable(impls, wl, *only, *repeats); err != nil {
			return err
		}
	}
	return os.WriteFile(*results, buf.Bytes(), 0o644)
}

// ecplusTable times ec+ (its statistics pass included) against the
// one-shot ec analysis, alternating in one `ecbench ecplus` process
// (after an untimed warm-up analysis; medians of the runs), so that the
// ratio compares like with like on a loaded machine; the bound is at
// most 5.
func (r *runner) ecplusTable(impls []impl, wl map[string]*workload, only string, repeats int) error {
	fmt.Fprintf(r.out, "\n## ec+ against the one-shot ec analysis (90%% global, ecprune's defaults; ec+ includes its own statistics pass)\n\n")
	fmt.Fprintf(r.out, "| model | samples | derivatives | implementation | ec s | ec+ s | of which after the statistics | ec+ / ec |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range []string{"p", "a", "b", "c"} {
		if !strings.Contains(only, k) {
			continue
		}
		w := wl[k]
		task := "classification"
		if k == "c" || k == "p" {
			task = "regression"
		}
		for _, im := range impls {
			if im.torch() {
				continue
			}
			args := []string{"ecplus", "-sparsity", "0.9", "-task", task, "-reps", strconv.Itoa(repeats)}
			if k == "c" {
				// One run of each: minutes, not seconds.
				args = []string{"ecplus", "-sparsity", "0.9", "-task", task, "-reps", "1", "-min-seconds", "0", "-warmup=false"}
			}
			if w.probes > 0 {
				args = append(args, "-probes", strconv.Itoa(w.probes))
			}
			p, err := r.run(im.env, im.ecbench, append(args, w.model, w.calib)...)
			if err != nil {
				return err
			}
			var m struct {
				EC     float64 `json:"ec_seconds"`
				ECPlus float64 `json:"ecplus_seconds"`
				Seq    float64 `json:"ecplus_sequential_seconds"`
				Ratio  float64 `json:"ratio"`
				Mode   string  `json:"mode"`
			}
			if err := json.Unmarshal(lastLine(p.stdout), &m); err != nil {
				return fmt.Errorf("%s: output %q: %v", im.name, p.stdout, err)
			}
			fmt.Fprintf(r.out, "| %s | %d | %s | %s | %.3g | %.3g | %.3g | **%.2f** |\n", w.desc, w.samples, m.Mode, im.name, m.EC, m.ECPlus, m.Seq, m.Ratio)
		}
	}
	return nil
}

// count loads the model to count parameters and operations.
func (w *workload) count() error {
	m, err := onnxio.Load(w.model)
	if err != nil {
		return err
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return err
	}
	n, err := npyRows(w.calib)
	if err != nil {
		return err
	}
	w.samples = n
	w.params = 0
	for _, l := range net.Layers {
		w.params += int64(l.In*l.Out + len(l.B))
	}
	mode := analysis.Derivatives{Kind: analysis.DerivReverse}
	k := net.Layers[len(net.Layers)-1].Out
	if w.probes > 0 && w.probes < k {
		mode = analysis.Derivatives{Kind: analysis.DerivProbes, Probes: w.probes}
	}
	w.dirs, w.flops = opCount(net, &analysis.Stats{N: n, Mode: mode})
	return nil
}

// boundMB is the memory bound of the issue: 6 x the model file plus the
// calibration file, MiB.
func (w *workload) boundMB() float64 {
	var s int64
	for i, f := range []string{w.model, w.calib} {
		if st, err := os.Stat(f); err == nil {
			s += st.Size() * int64(5*(1-i)+1)
		}
	}
	return float64(s) / (1 << 20)
}

// analysis runs the ec analysis of one implementation once.
func (r *runner) analysis(im impl, w *workload, _ int) (*proc, error) {
	var p *proc
	var err error
	if im.torch() {
		args := []string{r.peer, w.model, w.calib, "--dtype", im.dtype}
		if w.probes > 0 {
			args = append(args, "--probes", strconv.Itoa(w.probes))
		}
		p, err = r.run(im.env, r.python, args...)
	} else {
		args := []string{"analyze", w.model, w.calib}
		if w.probes > 0 {
			args = append([]string{"analyze", "-probes", strconv.Itoa(w.probes)}, w.model, w.calib)
		}
		p, err = r.run(im.env, im.ecbench, args...)
	}
	if err != nil {
		return nil, err
	}
	var res struct {
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal(lastLine(p.stdout), &res); err != nil {
		return nil, fmt.Errorf("%s: output %q: %v", im.name, p.stdout, err)
	}
	p.inner = res.Seconds
	return p, nil
}

// whole runs the whole ecprune prune command, or the whole torch peer.
func (r *runner) whole(im impl, w *workload) (*proc, error) {
	if im.torch() {
		return r.analysis(im, w, 0)
	}
	args := []string{"prune", "--method", "ec", w.model, "-o", filepath.Join(r.work, "pruned_"+w.key+".onnx"), "--calib", w.calib, "--sparsity", "0.5", "-q"}
	if w.probes > 0 {
		args = append(args, "--probes", strconv.Itoa(w.probes))
	}
	return r.run(im.env, im.ecprune, args...)
}

// run runs a command under /usr/bin/time -v (or with getrusage), with
// env added to the environment.
func (r *runner) run(env []string, name string, args ...string) (*proc, error) {
	tf := filepath.Join(r.work, "time.txt")
	var cmd *exec.Cmd
	if r.timeTool != "" {
		cmd = exec.Command(r.timeTool, append([]string{"-v", "-o", tf, name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if r.verbose {
		fmt.Fprintln(os.Stderr, "+", strings.Join(env, " "), name, strings.Join(args, " "))
	}
	t := time.Now()
	err := cmd.Run()
	p := &proc{wall: time.Since(t).Seconds(), stdout: out.Bytes()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && r.timeTool == "" {
		p.rssMB = float64(ru.Maxrss) / 1024
	}
	if r.timeTool != "" {
		if b, e := os.ReadFile(tf); e == nil {
			for _, line := range strings.Split(string(b), "\n") {
				line = strings.TrimSpace(line)
				if v, ok := strings.CutPrefix(line, "Maximum resident set size (kbytes): "); ok {
					kb, _ := strconv.ParseFloat(v, 64)
					p.rssMB = kb / 1024
				}
				if v, ok := strings.CutPrefix(line, "Elapsed (wall clock) time (h:mm:ss or m:ss): "); ok {
					p.wall = parseClock(v)
				}
			}
		}
	}
	if err != nil {
		return p, fmt.Errorf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
	}
	return p, nil
}

func parseClock(s string) float64 {
	var t float64
	for _, part := range strings.Split(s, ":") {
		v, _ := strconv.ParseFloat(part, 64)
		t = 60*t + v
	}
	return t
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

// median takes the median of each field separately.
func median(ps []proc) proc {
	if len(ps) == 0 {
		return proc{}
	}
	med := func(f func(proc) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return proc{wall: med(func(p proc) float64 { return p.wall }), rssMB: med(func(p proc) float64 { return p.rssMB }),
		inner: med(func(p proc) float64 { return p.inner })}
}

func firstExisting(paths ...string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s exists", strings.Join(paths, ", "))
}

// npyRows reads the first dimension of a .npy header.
func npyRows(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 512)
	n, _ := io.ReadFull(f, b)
	s := string(b[:n])
	i := strings.Index(s, "'shape': (")
	if i < 0 {
		return 0, fmt.Errorf("%s: no shape in the .npy header", path)
	}
	s = s[i+len("'shape': ("):]
	j := strings.IndexAny(s, ",)")
	return strconv.Atoi(strings.TrimSpace(s[:j]))
}

// machine describes this machine for the results.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name\t: "); ok {
				model = v
				break
			}
		}
	}
	avx512 := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil && bytes.Contains(b, []byte("avx512f")) {
		avx512 = ", AVX-512"
	}
	var mem string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf(", %.0f GiB RAM", kb/(1<<20))
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average at start " + strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("Machine: %s, %d cores%s%s, %s %s/%s%s.", model, runtime.NumCPU(), avx512, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}
