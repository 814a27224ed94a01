package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Test inputs: the bundled models and the small data slices described in
// testdata/data/README.md, so that tests run from a fresh clone.
var (
	tdModel = func(name string) string { return filepath.Join("..", "..", "testdata", "models", name) }
	tdData  = func(name string) string { return filepath.Join("..", "..", "testdata", "data", name) }
)

// cliRun runs the command in-process, as main does (named apart from
// prune_test.go's helper, which another file owns).
func cliRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// decodeOne decodes stdout as exactly one JSON document: anything else on
// stdout is an error.
func decodeOne(t *testing.T, stdout string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%s", err, stdout)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout holds more than one JSON document (%v)\n%s", err, stdout)
	}
}

func sameOpt(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// TestSweepEqualsPruneThenEval checks the sweep's central promise: the
// statistics are computed once for all 36 points, and still every point is
// exactly what a separate `prune` then `eval` gives (same file, same test
// metrics, same sizes).
func TestSweepEqualsPruneThenEval(t *testing.T) {
	if testing.Short() {
		t.Skip("12 prune runs")
	}
	model := tdModel("mnist_mlp_gemm.onnx")
	cx, tx, ty := tdData("mnist_calib_x.npy"), tdData("mnist_test_x.npy"), tdData("mnist_test_y.npy")
	dir := t.TempDir()
	saved := filepath.Join(dir, "sweep")
	methods := []string{"ec", "magnitude", "wanda", "random"}
	// --batch 64 over 256 calibration samples: one statistics pass reads 4
	// batches; a pass per point would read 48. Three sparsities of each
	// method are enough to compare every point with prune and eval; each
	// comparison costs a prune and an eval process's work.
	code, out, errs := cliRun(t, "sweep", model, "--calib", cx, "--test", tx, "--test-labels", ty,
		"--methods", strings.Join(methods, ","), "--sparsities", "0.3,0.6,0.9", "--batch", "64",
		"--save-dir", saved, "--json", "--progress", "never")
	if code != exitOK {
		t.Fatalf("sweep: exit %d\n%s", code, errs)
	}
	var r sweepResult
	decodeOne(t, out, &r)
	if r.StatisticsPasses != 4 {
		t.Errorf("statistics_passes = %d, want 4 (256 samples in batches of 64, once)", r.StatisticsPasses)
	}
	if n := strings.Count(errs, "computed once"); n < 1 || strings.Count(errs, "statistics of") != 1 {
		t.Errorf("the log should say once that the statistics were computed once:\n%s", errs)
	}
	if len(r.Points) != len(methods)*3 {
		t.Fatalf("%d points, want %d", len(r.Points), len(methods)*3)
	}
	if r.Dense.Test.Loss == nil || r.Dense.Test.Accuracy == nil {
		t.Fatalf("dense model without test loss or accuracy: %+v", r.Dense.Test)
	}
	for _, pt := range r.Points {
		name := pt.Method + "@" + sparsityLabel(pt.Sparsity)
		file := filepath.Join(dir, "pruned.onnx")
		s := strconv.FormatFloat(pt.Sparsity, 'g', -1, 64)
		code, pout, perr := cliRun(t, "prune", model, "-o", file, "--calib", cx, "--method", pt.Method, "--sparsity", s, "--batch", "64", "--json", "-q")
		if code != exitOK {
			t.Fatalf("%s: prune: exit %d\n%s", name, code, perr)
		}
		var pr pruneReport
		decodeOne(t, pout, &pr)
		if pr.Removed != pt.Removed || pr.Prunable != pt.Prunable || pr.After.NonZeros != pt.NonZeros {
			t.Errorf("%s: prune removed %d of %d (%d non-zeros), sweep %d of %d (%d)", name, pr.Removed, pr.Prunable, pr.After.NonZeros, pt.Removed, pt.Prunable, pt.NonZeros)
		}
		if pr.After.Bytes != pt.Size.AutoBytes || pr.After.GzipBytes != pt.Size.AutoGzip {
			t.Errorf("%s: prune file %d bytes (gzip %d), sweep says %d (%d)", name, pr.After.Bytes, pr.After.GzipBytes, pt.Size.AutoBytes, pt.Size.AutoGzip)
		}
		a, _ := os.ReadFile(file)
		b, err := os.ReadFile(pt.File)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: --save-dir file %s differs from prune's output (%v)", name, pt.File, err)
		}
		if want := filepath.Join(saved, sweepFileName(pt.Method, pt.Sparsity)); pt.File != want {
			t.Errorf("%s: saved as %s, want %s", name, pt.File, want)
		}
		code, eout, eerr := cliRun(t, "eval", file, "--data", tx, "--labels", ty, "--against", model, "--batch", "64", "--json", "-q")
		if code != exitOK {
			t.Fatalf("%s: eval: exit %d\n%s", name, code, eerr)
		}
		var ev evalResult
		decodeOne(t, eout, &ev)
		q, w := pt.Test, ev.Quality
		for _, f := range []struct {
			what string
			a, b *float64
		}{
			{"loss", q.Loss, w.Loss}, {"accuracy", q.Accuracy, w.Accuracy}, {"output MSE", q.MSE, w.MSE},
			{"output sq err", q.SqErr, w.SqErr}, {"max |diff|", q.MaxAbs, w.MaxAbs}, {"argmax agreement", q.ArgmaxSame, w.ArgmaxSame},
		} {
			if f.a == nil || !sameOpt(f.a, f.b) {
				t.Errorf("%s: test %s: sweep %s, prune+eval %s", name, f.what, fmtOpt(f.a), fmtOpt(f.b))
			}
		}
		if q.N != w.N {
			t.Errorf("%s: %d test samples, eval %d", name, q.N, w.N)
		}
	}
}

// TestSweepOutputs checks the CSV, --json=FILE and figures of a
// regression sweep without labels on the calibration data, and that the
// figures are the same bytes when drawn twice.
func TestSweepOutputs(t *testing.T) {
	model := tdModel("pde_mlp.onnx")
	args := func(dir, plot string) []string {
		return []string{"sweep", model, "--calib", tdData("pde_calib_x.npy"), "--test", tdData("pde_test_x.npy"),
			"--test-labels", tdData("pde_test_y.npy"), "--test-limit", "500", "--methods", "ec,magnitude,random",
			"--sparsities", "0.2,0.5,0.8", "--csv", filepath.Join(dir, "s.csv"), "--json=" + filepath.Join(dir, "s.json"),
			"--plot", filepath.Join(dir, plot), "-q"}
	}
	d1, d2 := t.TempDir(), t.TempDir()
	code, out, errs := cliRun(t, args(d1, "fig.png")...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	if errs != "" {
		t.Errorf("--quiet, yet stderr says:\n%s", errs)
	}
	// --json=FILE: JSON to the file, the text table to stdout.
	if !strings.Contains(out, "statistics computed once") || strings.HasPrefix(strings.TrimSpace(out), "{") {
		t.Errorf("stdout should be the text table:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(d1, "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r sweepResult
	decodeOne(t, string(b), &r)
	if r.Task != "regression" || r.TestSamples != 500 || len(r.Points) != 9 || r.StatisticsPasses != 4 {
		t.Errorf("task %q, %d test samples, %d points, %d passes; want regression, 500, 9, 4", r.Task, r.TestSamples, len(r.Points), r.StatisticsPasses)
	}
	for _, p := range r.Points {
		if p.Test.Loss == nil || p.Test.Accuracy != nil || p.Test.SqErr == nil {
			t.Errorf("%s@%g: regression point should have loss and output error, no accuracy: %+v", p.Method, p.Sparsity, p.Test)
		}
		if p.Size.DenseBytes < p.Size.AutoBytes || p.Size.DenseGzip >= p.Size.DenseBytes {
			t.Errorf("%s@%g: sizes %+v: auto is never larger than dense, gzip always smaller", p.Method, p.Sparsity, p.Size)
		}
	}

	// CSV: a header, the dense row, one row per point, the JSON's numbers
	// exactly.
	f, err := os.Open(filepath.Join(d1, "s.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2+len(r.Points) || rows[0][0] != "method" || rows[1][0] != "dense" {
		t.Fatalf("CSV has %d rows (want %d), starting %v / %v", len(rows), 2+len(r.Points), rows[0], rows[1])
	}
	col := slices.Index(rows[0], "test_loss")
	for i, p := range r.Points {
		row := rows[2+i]
		v, err := strconv.ParseFloat(row[col], 64)
		if row[0] != p.Method || err != nil || v != *p.Test.Loss {
			t.Errorf("CSV row %v: want %s with test_loss %v", row, p.Method, *p.Test.Loss)
		}
	}

	// Figures: regression has no accuracy figure; PNGs decode at the
	// documented size and are identical when drawn again.
	if code, _, errs := cliRun(t, args(d2, "fig.png")...); code != exitOK {
		t.Fatalf("second run: exit %d\n%s", code, errs)
	}
	want := []string{"fig.png", "fig-error.png", "fig-size.png"} // fig.png: the loss
	if len(r.Plots) != len(want) {
		t.Errorf("plots %v, want %v", r.Plots, want)
	}
	for _, name := range want {
		b1, err := os.ReadFile(filepath.Join(d1, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b1))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s := img.Bounds().Size(); s.X != 1200 || s.Y != 675 {
			t.Errorf("%s is %dx%d, want 1200x675", name, s.X, s.Y)
		}
		b2, _ := os.ReadFile(filepath.Join(d2, name))
		if !bytes.Equal(b1, b2) {
			t.Errorf("%s differs between two runs on the same input", name)
		}
	}
	if _, err := os.Stat(filepath.Join(d1, "fig-accuracy.png")); err == nil {
		t.Errorf("regression sweep drew an accuracy figure")
	}

	// SVG: well-formed XML.
	d3 := t.TempDir()
	if code, _, errs := cliRun(t, args(d3, "fig.svg")...); code != exitOK {
		t.Fatalf("svg run: exit %d\n%s", code, errs)
	}
	for _, name := range []string{"fig.svg", "fig-error.svg", "fig-size.svg"} {
		b, err := os.ReadFile(filepath.Join(d3, name))
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(bytes.NewReader(b))
		for {
			if _, err := dec.Token(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("%s: not XML: %v", name, err)
				}
				break
			}
		}
		if !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s has no <svg> element", name)
		}
	}
}

// TestSweepClassificationFigures checks that a classification sweep also
// draws accuracy, and that without test labels only the output error and
// size are drawn.
func TestSweepClassificationFigures(t *testing.T) {
	model := tdModel("mnist_mlp_gemm.onnx")
	for _, tc := range []struct {
		name   string
		labels bool
		want   []string
	}{
		{"labels", true, []string{"f.png", "f-accuracy.png", "f-error.png", "f-size.png"}},
		{"no labels", false, []string{"f.png", "f-size.png"}}, // f.png: the output error
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"sweep", model, "--calib", tdData("mnist_calib_x.npy"), "--limit", "64", "--test", tdData("mnist_test_x.npy"),
				"--test-limit", "64", "--methods", "ec,magnitude", "--sparsities", "0.5,0.9", "--plot", filepath.Join(dir, "f.png"), "--json", "-q"}
			if tc.labels {
				args = append(args, "--test-labels", tdData("mnist_test_y.npy"))
			}
			code, out, errs := cliRun(t, args...)
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			var r sweepResult
			decodeOne(t, out, &r)
			var got []string
			for _, p := range r.Plots {
				got = append(got, filepath.Base(p))
				if _, err := os.Stat(p); err != nil {
					t.Error(err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("figures %v, want %v", got, tc.want)
			}
			if tc.labels && (r.Task != "classification" || r.Points[0].Test.Accuracy == nil) {
				t.Errorf("task %q, accuracy %v: test labels make it classification", r.Task, r.Points[0].Test.Accuracy)
			}
		})
	}
}

// TestSweepBadInput checks that bad flags fail fast with exit status 2 and
// a JSON error, before any analysis.
func TestSweepBadInput(t *testing.T) {
	model := tdModel("pde_mlp.onnx")
	base := []string{"sweep", model, "--calib", tdData("pde_calib_x.npy"), "--test", tdData("pde_test_x.npy")}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no test data", []string{"sweep", model, "--calib", tdData("pde_calib_x.npy")}, "--test is required"},
		{"no calibration data", []string{"sweep", model, "--test", tdData("pde_test_x.npy")}, "--calib is required"},
		{"two models", append(slices.Clone(base), model), "one model"},
		{"sparsity 1", append(slices.Clone(base), "--sparsities", "0.5,1"), "outside [0, 1)"},
		{"bad range", append(slices.Clone(base), "--sparsities", "0.9:0.1:0.1"), "STOP >= START"},
		{"bad number", append(slices.Clone(base), "--sparsities", "0.5,x"), "not a number"},
		{"unknown method", append(slices.Clone(base), "--methods", "ec,bogus"), "bogus"},
		{"gradient without labels", append(slices.Clone(base), "--methods", "gradient"), "needs calibration labels"},
		{"bad scope", append(slices.Clone(base), "--scope", "row"), "--scope"},
		{"bad plot format", append(slices.Clone(base), "--plot", filepath.Join(dir, "f.jpg")), ".png or .svg"},
		{"plot folder missing", append(slices.Clone(base), "--plot", filepath.Join(dir, "no", "f.png")), "does not exist"},
		{"csv folder missing", append(slices.Clone(base), "--csv", filepath.Join(dir, "no", "s.csv")), "does not exist"},
		{"json file with a space", append(slices.Clone(base), "--json", filepath.Join(dir, "s.json")), "--json="},
		{"save-dir is a file", append(slices.Clone(base), "--save-dir", file), "--save-dir"},
		{"test data of the wrong shape", []string{"sweep", model, "--calib", tdData("pde_calib_x.npy"), "--test", tdData("mnist_test_x.npy")}, "shape"},
		{"test labels of the wrong count", append(slices.Clone(base), "--test-labels", tdData("pde_calib_y.npy")), "labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(slices.Clone(tc.args), "--json")
			code, out, errs := cliRun(t, args...)
			if code != exitBad {
				t.Fatalf("exit %d, want %d\n%s", code, exitBad, errs)
			}
			var doc struct {
				Error struct {
					Message  string `json:"message"`
					Kind     string `json:"kind"`
					ExitCode int    `json:"exit_code"`
				} `json:"error"`
			}
			decodeOne(t, out, &doc)
			if !strings.Contains(doc.Error.Message, tc.msg) || doc.Error.Kind != "bad_input" || doc.Error.ExitCode != exitBad {
				t.Errorf("error %+v, want a bad_input message containing %q", doc.Error, tc.msg)
			}
			if strings.Contains(errs, "statistics of") {
				t.Errorf("the analysis ran before the bad input was reported:\n%s", errs)
			}
		})
	}
}

func TestParseSparsities(t *testing.T) {
	p := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	for _, tc := range []struct {
		in   string
		want []float64
		bad  bool
	}{
		// The range values are the floats `--sparsity 0.3` parses to, not
		// 0.1+2*0.1, so that points match separate prune runs.
		{in: "0.1:0.9:0.1", want: []float64{p("0.1"), p("0.2"), p("0.3"), p("0.4"), p("0.5"), p("0.6"), p("0.7"), p("0.8"), p("0.9")}},
		{in: "0.1:0.95:0.05", want: func() []float64 {
			var w []float64
			for i := 2; i <= 19; i++ {
				w = append(w, p(strconv.FormatFloat(float64(i)*0.05, 'f', 2, 64)))
			}
			return w
		}()},
		{in: "0.5:0.5:0.1", want: []float64{0.5}},
		{in: "0.9,0.5, 0.8,0.5", want: []float64{0.5, 0.8, 0.9}},
		{in: "0", want: []float64{0}},
		{in: "1", bad: true},
		{in: "-0.1", bad: true},
		{in: "0.9:0.1:0.1", bad: true},
		{in: "0.1:0.9:0", bad: true},
		{in: "0.1:0.9", bad: true},
		{in: "a,b", bad: true},
		{in: "", bad: true},
		{in: "0:0.9:0.00001", bad: true}, // too many points
	} {
		got, err := parseSparsities(tc.in)
		if tc.bad {
			if err == nil || exitCode(err) != exitBad {
				t.Errorf("%q: got %v, %v; want a usage error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestSweepMethods(t *testing.T) {
	for _, tc := range []struct {
		in     []string
		labels bool
		want   []string
		bad    bool
	}{
		{nil, false, []string{"ec", "ec+", "magnitude", "wanda", "random"}, false},
		{nil, true, []string{"ec", "ec+", "magnitude", "wanda", "random", "gradient", "taylor"}, false},
		{[]string{"magnitude", "ec", "magnitude"}, false, []string{"magnitude", "ec"}, false},
		{[]string{"exact", "ec-nocomp"}, false, []string{"exact", "ec-nocomp"}, false},
		{[]string{"taylor"}, false, nil, true},
		{[]string{"taylor"}, true, []string{"taylor"}, false},
		{[]string{"nope"}, true, nil, true},
		{[]string{""}, false, nil, true},
	} {
		got, err := sweepMethods(tc.in, tc.labels)
		if tc.bad {
			if err == nil || exitCode(err) != exitBad {
				t.Errorf("%v (labels %v): got %v, %v; want a usage error", tc.in, tc.labels, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%v (labels %v): got %v, %v; want %v", tc.in, tc.labels, got, err, tc.want)
		}
	}
}

func TestSweepFileName(t *testing.T) {
	for _, tc := range []struct {
		method string
		s      float64
		want   string
	}{
		{"ec", 0.8, "ec_s0.80.onnx"},
		{"ec+", 0.95, "ec+_s0.95.onnx"},
		{"magnitude", 0.125, "magnitude_s0.125.onnx"},
		{"random", 0, "random_s0.00.onnx"},
	} {
		if got := sweepFileName(tc.method, tc.s); got != tc.want {
			t.Errorf("sweepFileName(%q, %g) = %q, want %q", tc.method, tc.s, got, tc.want)
		}
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) []string {
		var l []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Label != "" {
				l = append(l, tk.Label)
			}
		}
		return l
	}
	for _, tc := range []struct {
		lo, hi         float64
		labels         []string
		roundLo, round float64
	}{
		{0.15, 2.3, []string{"0.2", "0.5", "1", "2"}, 0.1, 5},
		{1.3e-4, 0.4, []string{"0.001", "0.01", "0.1"}, 1e-4, 1},
		{0.006, 470, []string{"0.01", "0.1", "1", "10", "100"}, 0.001, 1000},
		{2, 20, []string{"2", "5", "10", "20"}, 2, 20},
		{3e-8, 2e5, []string{"1e-7", "1e-6", "1e-5", "0.0001", "0.001", "0.01", "0.1", "1", "10", "100", "1000", "10000", "1e+5"}, 1e-8, 1e6},
	} {
		if got := labels(tc.lo, tc.hi); !slices.Equal(got, tc.labels) {
			t.Errorf("Ticks(%g, %g) labels %v, want %v", tc.lo, tc.hi, got, tc.labels)
		}
		lo, hi := logTicks{}.round(tc.lo, tc.hi)
		if math.Abs(lo-tc.roundLo) > 1e-12*tc.roundLo || math.Abs(hi-tc.round) > 1e-12*tc.round {
			t.Errorf("round(%g, %g) = %g, %g; want %g, %g", tc.lo, tc.hi, lo, hi, tc.roundLo, tc.round)
		}
	}
}
