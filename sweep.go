package ecprune

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// SweepOptions say what Sweep compares. Their zero value compares the
// default methods at sparsities 0.1 to 0.9 in steps of 0.1, ranked
// globally; Test is required.
type SweepOptions struct {
	Analysis
	// Methods are the registry's method names (nil: SweepMethods).
	Methods []string
	// Sparsities to prune at, each in [0, 1) (nil: 0.1 to 0.9 by 0.1).
	Sparsities []float64
	// Scope ranks globally (the default) or per layer.
	Scope Scope
	// Test is the data the pruned models are evaluated on; its labels
	// give test loss and accuracy.
	Test Data
	// TestLimit uses at most this many test samples (0: all).
	TestLimit int
	// SaveDir, if set, receives every pruned model (auto format) as
	// SweepFileName(method, sparsity).
	SaveDir string
	// Stage holds SaveDir's models until the caller commits them (nil:
	// written in place at once).
	Stage *onnxio.Stage
}

// SweepSize is the size of the file a point's pruning gives, stored two
// ways.
type SweepSize struct {
	AutoBytes  int64 `json:"auto_bytes"`       // what prune --format auto writes
	AutoGzip   int64 `json:"auto_gzip_bytes"`  // that file gzipped
	DenseBytes int64 `json:"dense_bytes"`      // --format dense: zeros stored
	DenseGzip  int64 `json:"dense_gzip_bytes"` // that file gzipped (zeros compress)
}

// SweepPoint is one method at one sparsity.
type SweepPoint struct {
	Method   string            `json:"method"`
	Sparsity float64           `json:"sparsity"`
	Removed  int               `json:"removed"`
	Prunable int               `json:"prunable"`
	NonZeros int               `json:"nonzeros"`
	Test     *analysis.Quality `json:"test"`
	// Predicted is the sum of the removed weights' importances: for ec on
	// the output objective, the first-order predicted output error.
	Predicted *float64  `json:"predicted_sq_err_per_sample,omitempty"`
	Size      SweepSize `json:"size"`
	File      string    `json:"file,omitempty"`
}

// SweepDense is the unpruned model measured like a point.
type SweepDense struct {
	File      string            `json:"file"`
	Bytes     int64             `json:"bytes"`
	GzipBytes int64             `json:"gzip_bytes"`
	Params    int               `json:"params"`
	NonZeros  int               `json:"nonzeros"`
	Test      *analysis.Quality `json:"test"`
}

// SweepReport is what Sweep measured.
type SweepReport struct {
	Model       string
	Task        string // empty without labels
	Objective   string
	Derivatives string
	Scope       string
	Seed        uint64
	Calibration int
	TestSamples int
	TestLabels  bool
	// StatisticsPasses counts the batches the one statistics pass read:
	// every point reuses them, so it does not grow with the points.
	StatisticsPasses int
	Methods          []string
	Sparsities       []float64
	Dense            SweepDense
	Points           []SweepPoint
	SaveDir          string
	Note             string
}

// DefaultSparsities are a sweep's sparsities when none are given.
func DefaultSparsities() []float64 {
	var out []float64
	for i := 1; i <= 9; i++ {
		out = append(out, float64(i)/10)
	}
	return out
}

// SweepFileName names a saved point: ec_s0.80.onnx.
func SweepFileName(method string, s float64) string {
	return method + "_s" + SparsityLabel(s) + ".onnx"
}

// SparsityLabel prints s with at least two decimals and as many as it
// needs, so that names sort and never collide.
func SparsityLabel(s float64) string {
	l := strconv.FormatFloat(s, 'f', -1, 64)
	if i := strings.IndexByte(l, '.'); i < 0 {
		l += ".00"
	} else if d := len(l) - i - 1; d < 2 {
		l += strings.Repeat("0", 2-d)
	}
	return l
}

// sweepMethods resolves the methods of a sweep: the defaults, or the
// named ones, checked and without repeats.
func (o SweepOptions) methods(labels bool) ([]*Method, error) {
	names := o.Methods
	if len(names) == 0 {
		for _, m := range SweepMethods(labels) {
			names = append(names, m.Name)
		}
	}
	var out []*Method
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" || slices.ContainsFunc(out, func(m *Method) bool { return m.Name == n }) {
			continue
		}
		m, err := MethodByName(n)
		if err != nil {
			return nil, o.optErr("Methods", "%s: %v", o.name("Methods"), err)
		}
		if m.Needs.Labels && !labels {
			return nil, o.optErr("Methods", "method %s needs calibration labels (%s)", n, o.name("Labels"))
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, o.optErr("Methods", "%s names no method", o.name("Methods"))
	}
	return out, nil
}

// MethodsOf resolves the method names of a sweep as Sweep will (the
// defaults when names is empty), so that a caller can name its outputs
// before the run.
func (o SweepOptions) MethodsOf(labels bool) ([]string, error) {
	ms, err := o.methods(labels)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names, nil
}

// Validate checks the options on their own.
func (o SweepOptions) Validate() error {
	for _, s := range o.Sparsities {
		if !(s >= 0 && s < 1) {
			return o.optErr("Sparsities", "%s: sparsity %g is outside [0, 1)", o.name("Sparsities"), s)
		}
	}
	switch o.Scope {
	case "", prune.Global, prune.Layer:
	default:
		return o.optErr("Scope", "%s %q: want global or layer", o.name("Scope"), o.Scope)
	}
	if len(o.Test.Inputs) == 0 {
		return o.optErr("Test", "%s is required: the data the pruned models are evaluated on", o.name("Test"))
	}
	return o.Analysis.Validate()
}

// Sweep prunes m with every method at every sparsity on statistics
// computed once, and measures each point as a separate Prune then
// Evaluate would: the file written, its sizes, its quality on the test
// data.
func Sweep(ctx context.Context, m *Model, d Data, o SweepOptions) (*SweepReport, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	methods, err := o.methods(d.Labels != "")
	if err != nil {
		return nil, err
	}
	sparsities := o.Sparsities
	if sparsities == nil {
		sparsities = DefaultSparsities()
	}
	scope := o.Scope
	if scope == "" {
		scope = prune.Global
	}
	a := o.Analysis
	ev := events(a.Events)
	if o.SaveDir != "" && len(m.file.ExternalLocations()) > 0 && len(methods)*len(sparsities) > 1 {
		return nil, &onnxio.BadInputError{File: m.path, Msg: fmt.Sprintf("has external data, which every %s model would write to the same file: save one point at a time with Prune, or leave out %s", a.name("SaveDir"), a.name("SaveDir"))}
	}
	// The test data and labels are read before the analysis, so that a
	// mistake there does not cost a long run.
	batch := a.Batch
	if batch == 0 {
		batch = 256
	}
	test, err := openInputs(m.net, o.Test.Inputs, batch, o.TestLimit, ev)
	if err != nil {
		return nil, err
	}
	defer test.Close()
	var traw *calib.Labels
	if o.Test.Labels != "" {
		if traw, err = test.LoadLabels(o.Test.Labels); err != nil {
			return nil, err
		}
		// Checked now against the model; converted for the task once the
		// calibration labels have decided it.
		width, err := outputWidth(m.net, test)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.path, err)
		}
		if _, _, err := a.prepareLabels(o.Test.Labels, traw, a.Task, width); err != nil {
			return nil, err
		}
	} else {
		ev.Log(fmt.Sprintf("no %s: measuring only the output error against the dense model, not test loss or accuracy", a.name("Test.Labels")))
	}

	var needs sessionNeeds
	for _, m := range methods {
		needs.grad = needs.grad || m.Needs.Labels
		needs.derivatives = needs.derivatives || m.Needs.Derivatives
	}
	s, err := openSession(ctx, m, d, a, needs)
	if err != nil {
		return nil, err
	}
	defer s.close()
	task := s.task
	var tlabels *analysis.Labels
	if traw != nil {
		given := task
		if s.labels == nil {
			// Without calibration labels the test labels decide the task.
			given = a.Task
		}
		width, err := outputWidth(m.net, test)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.path, err)
		}
		if tlabels, task, err = a.prepareLabels(o.Test.Labels, traw, given, width); err != nil {
			return nil, err
		}
	}
	r := &SweepReport{
		Model: m.path, Objective: string(s.opt.Objective), Derivatives: s.stats.Mode.String(), Scope: string(scope), Seed: s.opt.Seed,
		Calibration: s.stats.N, TestSamples: test.N(), TestLabels: tlabels != nil,
		StatisticsPasses: s.stats.Passes, Sparsities: sparsities, Note: DensifyNote, SaveDir: o.SaveDir,
	}
	for _, m := range methods {
		r.Methods = append(r.Methods, m.Name)
	}
	if tlabels != nil || s.labels != nil {
		r.Task = string(task)
	}
	ds, err := ModelSize(m)
	if err != nil {
		return nil, err
	}
	r.Dense = SweepDense{File: m.path, Bytes: ds.Bytes, GzipBytes: ds.GzipBytes, Params: ds.Params, NonZeros: ds.NonZeros}
	if r.Dense.Test, err = analysis.Evaluate(s.net, nil, calib.Data{Src: test}, tlabels, task, s.opt.Batch, nil); err != nil {
		return nil, fmt.Errorf("%s: evaluating the dense model on the test data: %w", m.path, err)
	}

	// Scores first, so that exact's own progress does not interleave with
	// the sweep's and a missing label fails before any point.
	for _, m := range methods {
		if _, err := s.baseScores(m); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp("", "ecprune-sweep-*")
	if err != nil {
		return nil, fmt.Errorf("sweep: temporary folder for size measurements: %w", err)
	}
	defer os.RemoveAll(tmp)
	if o.Stage != nil {
		o.Stage.OnAbort(func() { os.RemoveAll(tmp) })
	}

	total := len(methods) * len(sparsities)
	ev.Log(fmt.Sprintf("sweep: %d methods x %d sparsities = %d points, every one reusing the statistics computed once", len(methods), len(sparsities), total))
	start := time.Now()
	p := startPhase(ev, "sweep", total)
	for _, m := range methods {
		for _, sp := range sparsities {
			pt, err := s.sweepPoint(m, sp, scope, calib.Data{Src: test}, tlabels, task, o, tmp)
			if err != nil {
				p.end()
				return nil, fmt.Errorf("%s at sparsity %g: %w", m.Name, sp, err)
			}
			r.Points = append(r.Points, *pt)
			p.set(len(r.Points), total)
			ev.Debug(fmt.Sprintf("sweep: %s s=%g: test loss %s, output error %s, %d bytes", m.Name, sp, fmtOpt(pt.Test.Loss), fmtOpt(pt.Test.SqErr), pt.Size.AutoBytes))
		}
	}
	p.end()
	ev.Log(fmt.Sprintf("sweep: %d points in %s (statistics: %d passes over the calibration data, once)", total, time.Since(start).Round(time.Millisecond), r.StatisticsPasses))
	return r, nil
}

func fmtOpt(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'g', 4, 64)
}

// sweepPoint prunes with one method at one sparsity, writes the file
// Prune would write, measures its sizes and evaluates it as read back, so
// that a point equals a separate Prune then Evaluate exactly.
func (s *session) sweepPoint(m *Method, sp float64, scope prune.Scope, test analysis.Data, labels *analysis.Labels, task analysis.Task, o SweepOptions, tmp string) (*SweepPoint, error) {
	opt := prune.Options{Sparsity: sp, Scope: scope, Compensate: true}
	plan, err := s.plan(m, opt)
	if err != nil {
		return nil, err
	}
	meta := s.metadata(m.Name, opt)
	pt := &SweepPoint{Method: m.Name, Sparsity: sp, Removed: plan.Removed, Prunable: plan.Total}
	if m.Predicts && s.opt.Objective == analysis.ObjOutput {
		var sum float64
		for _, lp := range plan.Layers {
			sum += lp.Predicted
		}
		pt.Predicted = &sum
	}
	// The kept models are staged with the run's other outputs; the
	// measuring copies are written in the temporary folder at once.
	save := func(format export.Format, path string, st *onnxio.Stage) (export.Size, error) {
		pm, _, err := s.write(plan, format, true, meta)
		if err != nil {
			return export.Size{}, err
		}
		if err := export.SaveStaged(pm, path, 0, st); err != nil {
			return export.Size{}, err
		}
		return export.SizesStaged(path, st)
	}
	var st *onnxio.Stage
	auto := filepath.Join(tmp, "auto.onnx")
	if o.SaveDir != "" {
		auto = filepath.Join(o.SaveDir, SweepFileName(m.Name, sp))
		pt.File = auto
		st = o.Stage
	}
	as, err := save(export.Auto, auto, st)
	if err != nil {
		return nil, err
	}
	dsz, err := save(export.Dense, filepath.Join(tmp, "dense.onnx"), nil)
	if err != nil {
		return nil, err
	}
	pt.Size = SweepSize{AutoBytes: as.Disk, AutoGzip: as.Gzip, DenseBytes: dsz.Disk, DenseGzip: dsz.Gzip}
	net, err := readBack(auto, st)
	if err != nil {
		return nil, err
	}
	if err := net.Err(auto); err != nil {
		return nil, err
	}
	_, pt.NonZeros, _ = export.Counts(net)
	if pt.Test, err = analysis.Evaluate(net, s.net, test, labels, task, s.opt.Batch, nil); err != nil {
		return nil, fmt.Errorf("evaluating on the test data: %w", err)
	}
	return pt, nil
}
