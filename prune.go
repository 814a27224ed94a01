package ecprune

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"codeberg.org/sbinet/npyio/npz"
	"gonum.org/v1/gonum/mat"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/export"
	"github.com/ecprune/ecprune/onnxio"
	"github.com/ecprune/ecprune/prune"
)

// Version is ecprune's version, written into every pruned model's
// metadata.
var Version = "0.1.0-dev"

// Result is a pruned model not yet saved, with what Prune did: Report
// (weight granularity) or Units (Neuron). Save writes the model and
// completes the report with what it measures on the written file. Close
// releases the calibration data.
type Result struct {
	// Report is the outcome of a weight-level run, nil for Neuron.
	Report *Report
	// Units is the outcome of a Neuron run, nil otherwise.
	Units *UnitReport

	s      *session
	opt    Options
	method *Method
	pruned *onnxio.Model // the pruned protobuf; nil when the input is copied
	// copyOf is the source model copied byte for byte (nothing removed,
	// layout kept): its file, folder and external data locations.
	copyOf *onnxio.Model
	// beforeParams is the source's float parameters (Neuron).
	beforeParams int64
}

// Prune prunes m with the calibration data d at the options. The pruned
// model is held in the Result until Save writes it; nothing is written
// here.
func Prune(ctx context.Context, m *Model, d Data, opt Options) (*Result, error) {
	if err := opt.ValidateWith(d); err != nil {
		return nil, err
	}
	meth, _ := opt.method()
	if opt.Granularity == Neuron {
		return pruneUnits(ctx, m, d, opt, meth)
	}
	s, err := openSession(ctx, m, d, opt.Analysis, sessionNeeds{grad: meth.Needs.Labels, derivatives: meth.Needs.Derivatives})
	if err != nil {
		return nil, err
	}
	// One method, one model: scoring may consume the statistics and
	// selection the scores. ec+ reuses the statistics themselves with
	// exact derivatives, not with probes (which large models use).
	s.oneShot = !meth.Needs.Derivatives || s.opt.Probes > 0
	s.keepScores = opt.KeepScores
	res, err := s.pruneOne(meth, opt)
	if err != nil {
		s.close()
		return nil, err
	}
	return res, nil
}

// Close releases the calibration data.
func (r *Result) Close() error {
	if r.s != nil {
		r.s.close()
	}
	return nil
}

// Model is the pruned model's protobuf (nil when nothing was removed and
// the input is saved unchanged).
func (r *Result) Model() *onnxio.Model { return r.pruned }

// metadata is the JSON stored in the output model's metadata_props.
func (s *session) metadata(method string, opt prune.Options) string {
	m := map[string]any{
		"version": Version, "method": method, "sparsity": opt.Sparsity, "scope": string(opt.Scope),
		"objective": string(s.opt.Objective), "calibration_samples": s.stats.N, "seed": s.opt.Seed,
	}
	if opt.NM != nil {
		m["nm"] = fmt.Sprintf("%d:%d", opt.NM.N, opt.NM.M)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// objectiveName says in words what removal is measured on.
func objectiveName(objective Objective, task Task) string {
	if objective == analysis.ObjLoss {
		if task == analysis.TaskClassification {
			return "loss (cross-entropy on the labels)"
		}
		return "loss (squared error against the labels)"
	}
	return "output (squared change of the model's outputs)"
}

// pruneOne prunes with one method and options into a Result.
func (s *session) pruneOne(m *Method, o Options) (*Result, error) {
	opt := o.selection()
	r := &Report{
		Model: s.path, Method: m.Name, Sparsity: opt.Sparsity, Scope: string(opt.Scope),
		Objective: objectiveName(s.opt.Objective, s.task), Task: string(s.task), Derivatives: s.stats.Mode.String(), Seed: s.opt.Seed, Samples: s.stats.N, Note: DensifyNote,
	}
	if opt.NM != nil {
		r.NM = fmt.Sprintf("%d:%d", opt.NM.N, opt.NM.M)
		r.Scope = "layer"
	}
	if s.hold != nil {
		r.Holdout = s.hold.N()
	}
	r.Seconds.Analysis = s.statTime.Seconds()
	t := time.Now()
	plan, err := s.plan(m, opt)
	if err != nil {
		return nil, err
	}
	r.Refit = plan.Objective
	if plan.Task != "" {
		r.Task = string(plan.Task)
	}
	r.Seconds.Select = time.Since(t).Seconds()
	layers := planLayerReports(plan)
	res := &Result{Report: r, s: s, opt: o, method: m}
	format := o.Format
	if format == "" {
		format = export.Auto
	}
	t = time.Now()
	var results []export.TensorResult
	if plan.Removed == 0 && o.ExternalData == 0 {
		// Nothing removed: the input as it is, byte for byte (no bias
		// added, no metadata).
		res.copyOf = s.file
		for range layers {
			results = append(results, export.TensorResult{Format: "unchanged"})
		}
	} else {
		if res.pruned, results, err = s.write(plan, format, !o.NoNewBias, s.metadata(m.Name, opt)); err != nil {
			return nil, err
		}
		if s.oneShot {
			// The written model has what it needs of the source's
			// protobuf and of the plan's weights (counted before): let
			// them go before the model is saved and read back.
			for _, lp := range plan.Layers {
				lp.W, lp.Pruned = nil, nil
			}
			s.file = nil
		}
	}
	r.Seconds.Write = time.Since(t).Seconds()
	r.Removed, r.Prunable = plan.Removed, plan.Total
	for k, lr := range layers {
		if k < len(results) {
			lr.Format, lr.TensorBytes = string(results[k].Format), results[k].Bytes
		}
		if s.stats != nil {
			lr.Local = s.stats.Local[plan.Layers[k].Layer]
		}
		r.Layers = append(r.Layers, lr)
	}
	if m.Predicts && s.opt.Objective == analysis.ObjOutput {
		var p float64
		for _, lp := range plan.Layers {
			p += lp.Predicted
		}
		if p < 0 {
			// Rounding in S2 - S1²/S0 can leave a sum of zeros slightly
			// negative; an error is never below zero.
			p = 0
			r.PredictedClamped = true
		}
		r.PredictedSqErr = &p
	}
	return res, nil
}

// Save writes the pruned model to path (and its external data beside
// it), then reads it back and completes the report: sizes before and
// after, and the quality of the model as written on the calibration (and
// held-out) samples. It never writes over the input model or its
// external data.
func (r *Result) Save(path string) error { return r.SaveStaged(path, nil) }

// SaveStaged is Save whose files st holds until the caller commits them
// (nil: written in place at once); what was written is measured from the
// staged files.
func (r *Result) SaveStaged(path string, st *onnxio.Stage) error {
	if r.Units != nil {
		return r.saveUnits(path, st)
	}
	s, rep := r.s, r.Report
	rep.Output = path
	t := time.Now()
	if r.copyOf != nil {
		if err := copyModel(r.copyOf, path, st); err != nil {
			return err
		}
	} else if err := export.SaveStaged(r.pruned, path, r.opt.ExternalData, st); err != nil {
		return err
	}
	rep.Seconds.Write += time.Since(t).Seconds()
	// Sizes: gzip of a large model takes seconds, so both files are
	// measured in the background while the output is read back and
	// evaluated; what this run wrote is measured and read back from its
	// staged files, whatever another process does at path meanwhile.
	before, afterSize := measureAsync(s.path, nil), measureAsync(path, st)
	anet, err := readBack(path, st)
	if err != nil {
		return err
	}
	// Quality: the pruned network as written.
	t = time.Now()
	if err := anet.Err(path); err != nil {
		return err
	}
	if rep.Calibration.Original, rep.Calibration.Pruned, err = s.compare(anet, s.src, s.labels); err != nil {
		return err
	}
	if s.hold != nil {
		var hq QualityPair
		if hq.Original, hq.Pruned, err = s.compare(anet, s.hold, s.hlabels); err != nil {
			return err
		}
		rep.HoldoutQ = &hq
	}
	rep.Seconds.Evaluate = time.Since(t).Seconds()
	if rep.Before, err = before.wait(s.net); err != nil {
		return err
	}
	if rep.After, err = afterSize.wait(anet); err != nil {
		return err
	}
	return nil
}

// readBack loads and extracts a model just written (staged in st).
func readBack(path string, st *onnxio.Stage) (*onnxio.Network, error) {
	var m *onnxio.Model
	var err error
	if st != nil {
		m, err = onnxio.LoadStaged(path, st)
	} else {
		m, err = onnxio.Load(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", path, err)
	}
	net, err := onnxio.Extract(m, onnxio.ExtractOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", path, err)
	}
	return net, nil
}

// copyModel stages a model file and its external data files unchanged at
// out (and beside it).
func copyModel(m *onnxio.Model, out string, st *onnxio.Stage) error {
	if st == nil {
		st = &onnxio.Stage{}
		defer st.Abort()
		if err := copyModel(m, out, st); err != nil {
			return err
		}
		return st.Commit()
	}
	if onnxio.SameFile(out, m.Path) {
		return &onnxio.BadInputError{File: out, Msg: "would overwrite the input model; choose another output file name"}
	}
	b, err := os.ReadFile(m.Path)
	if err != nil {
		return &onnxio.BadInputError{File: m.Path, Msg: "cannot read: " + err.Error()}
	}
	if err := st.WriteFile(out, b); err != nil {
		return err
	}
	for _, loc := range m.ExternalLocations() {
		b, err := os.ReadFile(filepath.Join(m.Dir, loc))
		if err != nil {
			return &onnxio.BadInputError{File: m.Path, Msg: "external data: " + err.Error()}
		}
		target := filepath.Join(filepath.Dir(out), loc)
		if onnxio.SameFile(target, filepath.Join(m.Dir, loc)) {
			return &onnxio.BadInputError{File: out, Msg: "would overwrite external data file " + target + " of the input model " + m.Path + "; write to another folder"}
		}
		if err := st.MkdirAll(filepath.Dir(target)); err != nil {
			return err
		}
		if err := st.WriteFile(target, b); err != nil {
			return err
		}
	}
	return nil
}

// planLayerReports gives each layer's counts of a plan (its format and
// bytes are filled in once written).
func planLayerReports(plan *prune.Plan) []LayerReport {
	out := make([]LayerReport, 0, len(plan.Layers))
	for _, lp := range plan.Layers {
		lr := LayerReport{Name: lp.Layer.Name, Out: lp.Layer.Out, In: lp.Layer.In, Params: lp.Layer.Params(), Density: lp.Density(), Predicted: max(0, lp.Predicted)}
		for q, w := range lp.W {
			if w != 0 {
				lr.NonZeros++
			}
			if lp.Layer.At(q) != 0 {
				lr.NonZerosBef++
			}
		}
		var ss float64
		for _, d := range lp.BiasShift {
			ss += d * d
		}
		lr.BiasShiftNorm = math.Sqrt(ss)
		out = append(out, lr)
	}
	return out
}

// WriteScores saves the method's scores and deltas as .npz
// (NAME.importance, NAME.delta, [out, in]); a method that starts from
// another's scores writes those. The run must have kept them
// (Options.KeepScores).
func (r *Result) WriteScores(path string, st *onnxio.Stage) error {
	if r.Units != nil || !r.s.keepScores {
		return fmt.Errorf("scores of %s: not kept (Options.KeepScores)", r.method.Name)
	}
	sc, err := r.s.baseScores(r.method)
	if err != nil {
		return err
	}
	arrays := map[string][]float64{}
	shapes := map[string][]int{}
	for _, ls := range sc.Layers {
		arrays[ls.Layer.Name+".importance"] = ls.Score
		shapes[ls.Layer.Name+".importance"] = []int{ls.Layer.Out, ls.Layer.In}
		d := ls.Delta
		if d == nil {
			d = make([]float64, len(ls.Score))
		}
		arrays[ls.Layer.Name+".delta"] = d
		shapes[ls.Layer.Name+".delta"] = []int{ls.Layer.Out, ls.Layer.In}
	}
	if st == nil {
		st = &onnxio.Stage{}
		defer st.Abort()
		if err := saveNpz(path, arrays, shapes, st); err != nil {
			return err
		}
		return st.Commit()
	}
	return saveNpz(path, arrays, shapes, st)
}

// saveNpz writes 2-D float64 arrays to an .npz. Member names get numpy's
// ".npy" suffix so np.load keys them by the plain name.
func saveNpz(path string, arrays map[string][]float64, shapes map[string][]int, st *onnxio.Stage) error {
	names := make([]string, 0, len(arrays))
	for k := range arrays {
		names = append(names, k)
	}
	sort.Strings(names) // deterministic member order
	entries := entryNames(names)
	return st.Write(path, func(w io.Writer) error {
		zw := npz.NewWriter(w)
		for i, n := range names {
			s := shapes[n]
			if err := zw.Write(entries[i]+".npy", mat.NewDense(s[0], s[1], arrays[n])); err != nil {
				return err
			}
		}
		return zw.Close()
	})
}

// entryNames makes archive entry names of tensor names, which come from
// the model file: no slash, backslash or control character (an entry
// "../../x" would be written outside the folder by a careless unzip), not
// "." or "..", and unique.
func entryNames(names []string) []string {
	out := make([]string, len(names))
	used := map[string]bool{}
	for i, n := range names {
		e := strings.Map(func(r rune) rune {
			if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
				return '_'
			}
			return r
		}, n)
		if e == "" || strings.Trim(e, ".") == "" {
			e = "_" + e
		}
		base := e
		for k := 2; used[e]; k++ {
			e = base + "_" + strconv.Itoa(k)
		}
		used[e] = true
		out[i] = e
	}
	return out
}
