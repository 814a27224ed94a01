package ecprune

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/analysis/calib"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
	"github.com/ecprune/ecprune/prune/ecplus"
)

// session is a model with its calibration data and statistics, computed
// once and reused for every method and sparsity.
type session struct {
	ctx      context.Context
	opt      Analysis // with defaults
	ev       Events
	path     string
	file     *onnxio.Model // the source's protobuf, until written
	net      *onnxio.Network
	calib0   string        // the first calibration file, for messages
	src      *calib.Source // analysis samples
	hold     *calib.Source // held-out samples, or nil
	task     analysis.Task
	labels   *analysis.Labels // of src
	hlabels  *analysis.Labels // of hold
	stats    *analysis.Stats
	scores   map[string]*analysis.Scores
	prep     *ecplus.Prep // what the statistics pass kept for ec+, or nil
	statTime time.Duration
	// oneShot: the session scores one method once and writes one model
	// (Prune), so scoring may consume the statistics' per-weight sums (ec
	// computes in their storage) and selection the scores (the plan's
	// weights take their storage), unless keepScores. On a large model
	// that halves the peak memory. Sweep leaves it false.
	oneShot    bool
	keepScores bool
}

// sessionNeeds is what the methods of a run need of the statistics pass.
type sessionNeeds struct {
	grad        bool // the loss gradient (label-based methods)
	derivatives bool // ec+'s per-sample values
	noStats     bool // no weight-level statistics (units collect their own)
}

// openSession reads the calibration data and computes the statistics
// once.
func openSession(ctx context.Context, m *Model, d Data, a Analysis, needs sessionNeeds) (*session, error) {
	// ec+'s products and solves (package prune) go through gonum's BLAS:
	// they run on the analysis's kernels, and give the same bytes in every
	// program that prunes through this package.
	analysis.UseFastGemm()
	if ctx == nil {
		ctx = context.Background()
	}
	if err := a.validateData(d); err != nil {
		return nil, err
	}
	if err := prunableLayers(m); err != nil {
		return nil, err
	}
	a = a.withDefaults()
	large := false
	if pct := analysis.GCPercent(m.net); pct < 100 {
		large = true
		if a.TuneGC && os.Getenv("GOGC") == "" {
			debug.SetGCPercent(pct)
		}
	}
	src, err := openInputs(m.net, d.Inputs, a.Batch, a.Limit, a.Events)
	if err != nil {
		return nil, err
	}
	s := &session{ctx: ctx, opt: a, ev: a.Events, path: m.path, file: m.file, net: m.net, calib0: d.Inputs[0], src: src, scores: map[string]*analysis.Scores{}}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if a.Holdout > 0 {
		s.src, s.hold = src.Split(a.Holdout, a.Seed)
		if s.src.N() == 0 || s.hold.N() == 0 {
			return nil, a.optErr("Holdout", "%s %g leaves %d samples for the analysis and %d held out", a.name("Holdout"), a.Holdout, s.src.N(), s.hold.N())
		}
	}
	// Degenerate data makes every importance zero: the run would "succeed"
	// with an arbitrary pruning.
	if !a.Force {
		if n := s.src.N(); n < 2 {
			return nil, &calib.DataError{File: s.calib0, Msg: fmt.Sprintf("%d calibration sample left for the analysis (after %s and %s): the statistics need at least 2, better hundreds (%s runs anyway)", n, a.name("Limit"), a.name("Holdout"), a.name("Force"))}
		}
		if !src.Varies() {
			return nil, &calib.DataError{File: s.calib0, Msg: fmt.Sprintf("every calibration sample is the same (each feature constant): every importance would be zero and the pruning arbitrary; give real inputs (%s runs anyway)", a.name("Force"))}
		}
	}
	if d.Labels != "" {
		width, err := outputWidth(m.net, s.src)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.path, err)
		}
		raw, err := s.src.LoadLabels(d.Labels)
		if err != nil {
			return nil, err
		}
		if s.labels, s.task, err = a.prepareLabels(d.Labels, raw, a.Task, width); err != nil {
			return nil, err
		}
		if s.hold != nil {
			if raw, err = s.hold.LoadLabels(d.Labels); err != nil {
				return nil, err
			}
			if s.hlabels, _, err = a.prepareLabels(d.Labels, raw, s.task, width); err != nil {
				return nil, err
			}
		}
	} else {
		s.task = guessTask(a.Task, nil)
	}
	if needs.noStats {
		ok = true
		return s, nil
	}
	var observe func(*analysis.Stats, analysis.Batch, *analysis.Trace, [][]float64) error
	if needs.derivatives {
		// ec+ keeps per-sample values of this pass instead of its own.
		s.prep = ecplus.NewPrep(m.net, s.data(), s.ecplusTask())
		observe = s.prep.Observe
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := time.Now()
	p := startPhase(s.ev, "analysis", s.src.N())
	s.stats, err = analysis.Collect(m.net, s.data(), analysis.StatsOptions{
		Objective: a.Objective, Task: s.task, Labels: s.labels,
		AD: a.AD, Probes: a.Probes, Seed: a.Seed, Batch: a.Batch,
		Grad:     needs.grad && s.labels != nil,
		Log:      logf(s.ev),
		Progress: p.set,
		Observe:  observe,
	})
	p.end()
	if err != nil {
		return nil, fmt.Errorf("%s: analysis: %w", m.path, err)
	}
	s.statTime = time.Since(t)
	if large {
		// The last batch's buffers are garbage now: collect them before
		// scoring and writing allocate (a few milliseconds; the live heap
		// is a few large slices the collector does not scan).
		runtime.GC()
	}
	s.ev.Log(fmt.Sprintf("statistics of %d layers over %d samples computed once in %s (%d batches, %s)", len(s.stats.Layers), s.stats.N, s.statTime.Round(time.Millisecond), s.stats.Passes, s.stats.Mode))
	ok = true
	return s, nil
}

// prunableLayers refuses, as bad input, a model without a prunable dense
// layer (a CNN whose classifier is a convolution, such as SqueezeNet),
// before any calibration data is read: there is nothing to rank.
func prunableLayers(m *Model) error {
	if len(m.net.Prunable()) > 0 {
		return nil
	}
	msg := "no prunable dense layer: ecprune prunes Gemm and MatMul nodes with a constant weight (nn.Linear layers, einsum with a constant operand), and this model has none"
	if len(m.net.Layers) > 0 {
		l := m.net.Layers[0]
		msg += fmt.Sprintf("; its %d dense layers cannot be pruned (%s: %s)", len(m.net.Layers), l.Name, l.Reason)
	}
	return &onnxio.BadInputError{File: m.path, Msg: msg}
}

// data is the analysis samples as analysis.Data.
func (s *session) data() analysis.Data { return calib.Data{Src: s.src} }

func (s *session) close() {
	if s.src != nil {
		s.src.Close()
	}
}

// regression reports whether the outputs are known not to be classes:
// regression labels or Task regression. Without labels the task is only
// a default, and an argmax agreement may still mean something.
func (s *session) regression() bool {
	return s.task == analysis.TaskRegression && (s.labels != nil || s.opt.Task == analysis.TaskRegression)
}

// ecplusTask is the task ec+ matches: ecplus.TaskAuto (recognised from the
// model) when neither labels nor Task name one.
func (s *session) ecplusTask() analysis.Task {
	if s.labels == nil && s.opt.Task == "" {
		return ecplus.TaskAuto
	}
	return s.task
}

// scoresOf computes (once) a method's own scores.
func (s *session) scoresOf(m *Method) (*analysis.Scores, error) {
	if sc, ok := s.scores[m.Name]; ok {
		return sc, nil
	}
	if m.Needs.Labels && s.labels == nil {
		return nil, s.opt.optErr("Method", "method %s needs labels (%s)", m.Name, s.opt.name("Labels"))
	}
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	sc, err := m.score(s)
	if err != nil {
		return nil, err
	}
	if !s.opt.Force && !m.DataFree && allZero(sc) {
		if zero := zeroLayers(s.net); len(zero) > 0 {
			return nil, &onnxio.BadInputError{File: s.path, Msg: fmt.Sprintf("every weight's importance (%s) is zero: the weights of %s are all zero (an untrained, zero-initialised layer, as torchvision's VisionTransformer head is?), so no other weight reaches the outputs and the pruning would be arbitrary (%s runs anyway)", m.Name, strings.Join(zero, ", "), s.opt.name("Force"))}
		}
		return nil, &calib.DataError{File: s.calib0, Msg: "every weight's importance (" + m.Name + ") is zero on this calibration data: the pruning would be arbitrary; check the data (" + s.opt.name("Force") + " runs anyway)"}
	}
	if s.oneShot {
		s.releaseSums()
	}
	s.scores[m.Name] = sc
	return sc, nil
}

// baseScores are the scores a method starts from: its own, or its
// base's.
func (s *session) baseScores(m *Method) (*analysis.Scores, error) {
	if m.score == nil {
		return s.scoresOf(lookup(m.base))
	}
	return s.scoresOf(m)
}

// zeroLayers names the prunable layers whose weights are all zero: when
// every importance is zero, such a layer, not the data, is the usual
// cause.
func zeroLayers(net *onnxio.Network) []string {
	var names []string
	for _, l := range net.Prunable() {
		zero := true
		for q := range l.Out * l.In {
			if l.At(q) != 0 {
				zero = false
				break
			}
		}
		if zero {
			names = append(names, l.Name)
		}
	}
	return names
}

func allZero(sc *analysis.Scores) bool {
	for _, ls := range sc.Layers {
		for _, v := range ls.Score {
			if v != 0 {
				return false
			}
		}
	}
	return true
}

// releaseSums drops the statistics' per-weight sums once a one-shot
// session has its scores: nothing reads them afterwards (the report uses
// only N and Mode), and they are 16-24 bytes per weight.
func (s *session) releaseSums() {
	for _, ls := range s.stats.Layers {
		ls.S1, ls.S2, ls.GradW = nil, nil, nil
	}
}

// selectScores selects by a method's scores.
func (s *session) selectScores(m *Method, opt prune.Options) (*prune.Plan, error) {
	sc, err := s.scoresOf(m)
	if err != nil {
		return nil, err
	}
	opt.Compensate = opt.Compensate && m.Compensates
	if s.oneShot && !s.keepScores {
		// The scores are spent: the plan's weights take their storage.
		delete(s.scores, m.Name)
		return prune.SelectConsuming(s.net, sc, opt)
	}
	return prune.Select(s.net, sc, opt)
}

// plan prunes with a method at the given options.
func (s *session) plan(m *Method, opt prune.Options) (*prune.Plan, error) {
	if err := opt.Validate(s.net); err != nil {
		return nil, s.opt.fromPrune(err)
	}
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	plan, err := m.plan(s, opt)
	return plan, s.opt.fromPrune(err)
}

// write applies a plan to the model file's protobuf.
func (s *session) write(plan *prune.Plan, format export.Format, addBias bool, meta string) (*onnxio.Model, []export.TensorResult, error) {
	ups := make([]export.Update, 0, len(plan.Layers))
	for _, lp := range plan.Layers {
		u := export.Update{Layer: lp.Layer, W: lp.W}
		if lp.BiasShift != nil {
			u.B = lp.B
		}
		if u.B != nil && lp.Layer.B == nil && !addBias {
			return nil, nil, s.opt.optErr("NoNewBias", "layer %s has no bias and %s: cannot compensate (use a non-compensating method or allow the bias)", lp.Layer.Name, s.opt.name("NoNewBias"))
		}
		ups = append(ups, u)
	}
	return export.Apply(s.file, ups, export.Options{Format: format, AddBias: addBias, Metadata: meta})
}

// compare measures the original and a pruned network on a data set.
func (s *session) compare(pruned *onnxio.Network, src *calib.Source, labels *analysis.Labels) (orig, pr *analysis.Quality, err error) {
	d := calib.Data{Src: src}
	if labels != nil {
		if orig, err = analysis.Evaluate(s.net, nil, d, labels, s.task, s.opt.Batch, nil); err != nil {
			return nil, nil, err
		}
	} else {
		orig = &analysis.Quality{N: src.N()}
	}
	pr, err = analysis.Evaluate(pruned, s.net, d, labels, s.task, s.opt.Batch, nil)
	if err == nil && s.regression() {
		pr.ArgmaxSame = nil // no classes: the agreement means nothing
	}
	return orig, pr, err
}
