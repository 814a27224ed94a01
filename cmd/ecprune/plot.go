package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/onnxio"
)

// Figure geometry: 8 x 4.5 inches at 150 dpi is 1200 x 675 pixels, which a
// README shows at about 70% with 11-point text still easy to read.
const (
	plotWidth  = 8 * vg.Inch
	plotHeight = 4.5 * vg.Inch
	plotDPI    = 150
)

// sans is the figures' typeface: sans-serif (gonum's default is serif)
// reads better at figure sizes.
var sans = font.Variant("Sans")

// figure is a plot with a two-line heading. The heading and the legend are
// drawn outside the axes (see drawFigure), so that they never hide a curve.
type figure struct {
	p          *plot.Plot
	title, sub string
}

// plotFormat is the image format named by the --plot file's extension.
func plotFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		return "png", nil
	case ".svg":
		return "svg", nil
	}
	return "", usagef("--plot %q: want a .png or .svg file name", path)
}

// plotFiles lists every file plotSweep may write for path.
func plotFiles(path string) []string {
	base, ext := strings.TrimSuffix(path, filepath.Ext(path)), filepath.Ext(path)
	return []string{path, base + "-accuracy" + ext, base + "-error" + ext, base + "-size" + ext}
}

// plotSweep draws a sweep's figures: path itself gets the main one (test
// loss, or the output error without test labels), and F.png gets
// F-accuracy.png (classification only), F-error.png (when path has the
// loss) and F-size.png beside it. One file per quantity, so that each can
// be placed in a document on its own.
func plotSweep(path string, r *sweepResult, st *onnxio.Stage) ([]string, error) {
	ext, err := plotFormat(path)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(path, filepath.Ext(path))
	model := filepath.Base(r.Model)
	sub := fmt.Sprintf("%d test samples; statistics from %d calibration samples; %s ranking; no fine-tuning",
		r.TestSamples, r.Calibration, r.Scope)
	type named struct {
		name string
		f    *figure
	}
	var figs []named
	lossLabel := "test loss (mean squared error)"
	if r.Task == "classification" {
		lossLabel = "test loss (cross-entropy, nats)"
	}
	figs = append(figs, named{"loss", methodPlot(r, model+": test loss after pruning", sub, lossLabel,
		func(p *sweepPoint) *float64 { return p.Test.Loss }, r.Dense.Test.Loss, 1, true)})
	figs = append(figs, named{"accuracy", methodPlot(r, model+": test accuracy after pruning", sub, "test accuracy (%)",
		func(p *sweepPoint) *float64 { return p.Test.Accuracy }, r.Dense.Test.Accuracy, 100, false)})
	zero := 0.0
	figs = append(figs, named{"error", methodPlot(r, model+": output error against the dense model", sub,
		"||y - y_dense||^2 per sample",
		func(p *sweepPoint) *float64 { return p.Test.SqErr }, &zero, 1, true)})
	figs = append(figs, named{"size", sizePlot(r, model)})
	var out []string
	for _, f := range figs {
		if f.f == nil {
			continue
		}
		file := base + "-" + f.name + "." + ext
		if len(out) == 0 {
			file = path
		}
		if err := savePlot(f.f, file, ext, st); err != nil {
			return out, err
		}
		out = append(out, file)
	}
	return out, nil
}

// methodPlot draws one quantity against sparsity, one line per method,
// starting from the dense model at sparsity 0. It returns nil when no point
// has the quantity (no labels: no loss). Values spanning more than a decade
// go on a log scale when logOK, so that the good methods are not squashed
// flat by the bad ones.
func methodPlot(r *sweepResult, title, sub, ylabel string, get func(*sweepPoint) *float64, dense *float64, scale float64, logOK bool) *figure {
	series := map[string]plotter.XYs{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range r.Points {
		pt := &r.Points[i]
		v := get(pt)
		if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
			continue
		}
		y := scale * *v
		series[pt.Method] = append(series[pt.Method], plotter.XY{X: 100 * pt.Sparsity, Y: y})
		lo, hi = math.Min(lo, y), math.Max(hi, y)
	}
	if len(series) == 0 {
		return nil
	}
	if dense != nil && *dense > 0 {
		lo, hi = math.Min(lo, scale**dense), math.Max(hi, scale**dense)
	}
	p := newPlot(ylabel)
	logY := logOK && lo > 0 && hi/lo > 10
	switch {
	case logY:
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
		// Out to labelled ticks, so that both ends of the axis are read
		// off a label.
		p.Y.Min, p.Y.Max = logTicks{}.round(lo, hi)
	case scale == 100:
		// A percentage: the whole 0-100 range, so that a drop reads at
		// its true size.
		p.Y.Min, p.Y.Max = 0, 100
		p.Y.Tick.Marker = plot.ConstantTicks(percentTicks())
	}
	hasZero := len(r.Sparsities) > 0 && r.Sparsities[0] == 0
	// The dense model's value is the sparsity-0 end of every line; a zero
	// (the dense model's error against itself) has no place on a log
	// scale, so it is left out there.
	startsDense := dense != nil && !hasZero && !(logY && *dense <= 0)
	if dense != nil && *dense > 0 {
		ref, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: scale * *dense}, {X: 100, Y: scale * *dense}})
		ref.LineStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(0.8), Dashes: []vg.Length{vg.Points(10), vg.Points(4)}}
		p.Add(ref)
		p.Legend.Add("dense model", ref)
	}
	for i, m := range r.Methods {
		xy := series[m]
		if len(xy) == 0 {
			continue
		}
		if startsDense {
			xy = append(plotter.XYs{{X: 0, Y: scale * *dense}}, xy...)
		}
		addSeries(p, methodLabel(m), methodStyleFor(m, i), xy)
	}
	return &figure{p, title, sub}
}

// sizePlot draws the first method's file sizes: the dense format, the auto
// format prune writes, and both gzipped.
func sizePlot(r *sweepResult, model string) *figure {
	if len(r.Points) == 0 {
		return nil
	}
	// The recommended method when it is in the sweep, else the first.
	method := r.Points[0].Method
	if rec := ecprune.Recommended().Name; slices.Contains(r.Methods, rec) {
		method = rec
	}
	unit, div := "KiB", 1024.0
	if r.Dense.Bytes >= 4<<20 {
		unit, div = "MiB", 1<<20
	}
	var dense, auto, gz, agz plotter.XYs
	if len(r.Sparsities) == 0 || r.Sparsities[0] != 0 {
		// Sparsity 0 is the input file.
		b, g := float64(r.Dense.Bytes)/div, float64(r.Dense.GzipBytes)/div
		dense, auto, gz, agz = plotter.XYs{{X: 0, Y: b}}, plotter.XYs{{X: 0, Y: b}}, plotter.XYs{{X: 0, Y: g}}, plotter.XYs{{X: 0, Y: g}}
	}
	for _, pt := range r.Points {
		if pt.Method != method {
			continue
		}
		x := 100 * pt.Sparsity
		dense = append(dense, plotter.XY{X: x, Y: float64(pt.Size.DenseBytes) / div})
		auto = append(auto, plotter.XY{X: x, Y: float64(pt.Size.AutoBytes) / div})
		gz = append(gz, plotter.XY{X: x, Y: float64(pt.Size.DenseGzip) / div})
		agz = append(agz, plotter.XY{X: x, Y: float64(pt.Size.AutoGzip) / div})
	}
	p := newPlot("size on disk (" + unit + ")")
	p.Y.Min = 0
	addSeries(p, "dense format", seriesStyle{color.RGBA{0, 114, 178, 255}, nil, draw.SquareGlyph{}, 1.5}, dense)
	addSeries(p, "dense format, gzipped", seriesStyle{color.RGBA{0, 158, 115, 255}, []vg.Length{vg.Points(6), vg.Points(3)}, draw.TriangleGlyph{}, 1.5}, gz)
	addSeries(p, "auto format", seriesStyle{color.RGBA{213, 94, 0, 255}, nil, draw.CircleGlyph{}, 2.5}, auto)
	addSeries(p, "auto format, gzipped", seriesStyle{color.RGBA{204, 121, 167, 255}, []vg.Length{vg.Points(2), vg.Points(3)}, draw.RingGlyph{}, 1.5}, agz)
	return &figure{p, model + ": file size after pruning with " + method,
		"dense: zeros stored; auto (what prune writes): sparse storage where smaller; runtimes densify it on load"}
}

// newPlot sets up the axes, fonts and grid every figure shares.
func newPlot(ylabel string) *plot.Plot {
	p := plot.New()
	p.X.Label.Text = "sparsity (% of prunable weights removed)"
	p.Y.Label.Text = ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(12)
		a.Label.TextStyle.Font.Variant = sans
		a.Tick.Label.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Variant = sans
	}
	p.X.Min, p.X.Max = 0, 100
	p.X.Tick.Marker = plot.ConstantTicks(percentTicks())
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Legend.TextStyle.Font.Variant = sans
	p.Legend.ThumbnailWidth = vg.Points(28)
	p.Legend.Padding = vg.Points(2.5)
	p.Legend.Top, p.Legend.Left = true, true
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 225}
	g.Horizontal.Color = color.Gray{Y: 225}
	p.Add(g)
	return p
}

func percentTicks() []plot.Tick {
	var t []plot.Tick
	for v := 0; v <= 100; v += 5 {
		l := ""
		if v%10 == 0 {
			l = strconv.Itoa(v)
		}
		t = append(t, plot.Tick{Value: float64(v), Label: l})
	}
	return t
}

type seriesStyle struct {
	color color.RGBA
	dash  []vg.Length
	glyph draw.GlyphDrawer
	width float64 // points
}

// methodStyles fixes each method's look, so that a method looks the same
// in every figure and for every model. Colours are from Okabe and Ito's
// colour-blind-safe palette; dashes and markers tell lines apart in grey.
var methodStyles = map[string]seriesStyle{
	"ec":        {color.RGBA{213, 94, 0, 255}, nil, draw.CircleGlyph{}, 2.5},
	"ec+":       {color.RGBA{204, 121, 167, 255}, nil, draw.TriangleGlyph{}, 2.5},
	"ec-nocomp": {color.RGBA{230, 159, 0, 255}, []vg.Length{vg.Points(6), vg.Points(3)}, draw.RingGlyph{}, 1.5},
	"magnitude": {color.RGBA{0, 114, 178, 255}, nil, draw.SquareGlyph{}, 1.5},
	"wanda":     {color.RGBA{0, 158, 115, 255}, []vg.Length{vg.Points(6), vg.Points(3)}, draw.PyramidGlyph{}, 1.5},
	"random":    {color.RGBA{110, 110, 110, 255}, []vg.Length{vg.Points(2), vg.Points(3)}, draw.PlusGlyph{}, 1.5},
	"gradient":  {color.RGBA{86, 180, 233, 255}, []vg.Length{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}, draw.BoxGlyph{}, 1.5},
	"taylor":    {color.RGBA{150, 120, 0, 255}, []vg.Length{vg.Points(3), vg.Points(2)}, draw.CrossGlyph{}, 1.5},
	"exact":     {color.RGBA{0, 0, 0, 255}, nil, draw.CrossGlyph{}, 1.5},
}

func methodStyleFor(m string, i int) seriesStyle {
	if s, ok := methodStyles[m]; ok {
		return s
	}
	fallback := []color.RGBA{{0, 0, 0, 255}, {128, 0, 128, 255}, {139, 69, 19, 255}}
	return seriesStyle{fallback[i%len(fallback)], []vg.Length{vg.Points(4), vg.Points(2)}, draw.RingGlyph{}, 1.5}
}

// methodLabel names a method in legends.
func methodLabel(m string) string {
	if m == "ec-nocomp" {
		return "ec-nocomp (no bias shift)"
	}
	return m
}

func addSeries(p *plot.Plot, name string, st seriesStyle, xy plotter.XYs) {
	line, pts, err := plotter.NewLinePoints(xy)
	if err != nil {
		return // only NaN or Inf fail, and callers filter them out
	}
	line.LineStyle = draw.LineStyle{Color: st.color, Width: vg.Points(st.width), Dashes: st.dash}
	pts.GlyphStyle = draw.GlyphStyle{Color: st.color, Radius: vg.Points(3), Shape: st.glyph}
	p.Add(line, pts)
	p.Legend.Add(name, line, pts)
}

// logTicks labels 1, 2 and 5 times powers of ten over short ranges and
// only powers of ten over long ones: plot.LogTicks labels powers of ten
// only, which leaves one or two labels on a typical loss axis.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi > lo) {
		return nil
	}
	labelled := logTicks{}.labelled(lo, hi)
	var t []plot.Tick
	for e := int(math.Floor(math.Log10(lo))); e <= int(math.Ceil(math.Log10(hi))); e++ {
		for m := 1; m <= 9; m++ {
			l := decimal(m, e)
			v, _ := strconv.ParseFloat(l, 64)
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			if !labelled[m] {
				l = ""
			}
			t = append(t, plot.Tick{Value: v, Label: l})
		}
	}
	return t
}

// decimal writes m * 10^e (m a digit) exactly: 0.002, 50, 1000, and 2e-7
// or 1e+06 beyond a few zeros, where plain digits get hard to count.
func decimal(m, e int) string {
	switch {
	case e >= 0 && e <= 4:
		return strconv.Itoa(m) + strings.Repeat("0", e)
	case e < 0 && e >= -4:
		return "0." + strings.Repeat("0", -e-1) + strconv.Itoa(m)
	}
	return fmt.Sprintf("%de%+d", m, e)
}

// labelled are the mantissas that get a label over [lo, hi].
func (logTicks) labelled(lo, hi float64) map[int]bool {
	if math.Log10(hi/lo) > 3 {
		return map[int]bool{1: true}
	}
	return map[int]bool{1: true, 2: true, 5: true}
}

// round widens [lo, hi] to the nearest labelled ticks outside it.
func (t logTicks) round(lo, hi float64) (float64, float64) {
	lab := t.labelled(lo, hi)
	down, up := lo, hi
	at := func(m, e int) float64 {
		v, _ := strconv.ParseFloat(decimal(m, e), 64)
		return v
	}
	e := int(math.Floor(math.Log10(lo)))
	for m := 9; m >= 1; m-- {
		if v := at(m, e); lab[m] && v <= lo*(1+1e-9) {
			down = v
			break
		}
	}
	e = int(math.Floor(math.Log10(hi)))
	up = at(1, e+1)
	for m := 1; m <= 9; m++ {
		if v := at(m, e); lab[m] && v >= hi*(1-1e-9) {
			up = v
			break
		}
	}
	return down, up
}

// savePlot renders a figure to PNG or SVG, atomically.
func savePlot(f *figure, file, ext string, st *onnxio.Stage) error {
	var wt io.WriterTo
	switch ext {
	case "svg":
		cv := vgsvg.New(plotWidth, plotHeight)
		drawFigure(f, draw.New(cv))
		wt = cv
	default:
		cv := vgimg.NewWith(vgimg.UseWH(plotWidth, plotHeight), vgimg.UseDPI(plotDPI))
		drawFigure(f, draw.New(cv))
		wt = vgimg.PngCanvas{Canvas: cv}
	}
	if err := st.Write(file, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	}); err != nil {
		return fmt.Errorf("writing figure %s: %w", file, err)
	}
	return nil
}

// drawFigure lays a figure out: the heading across the whole width, the
// axes below it on the left, the legend in a column on their right.
func drawFigure(f *figure, c draw.Canvas) {
	c.SetColor(color.White)
	c.Fill(c.Rectangle.Path())
	pad := vg.Points(8)
	head := func(size float64, col color.Color) text.Style {
		return text.Style{Color: col, Font: font.Font{Typeface: plot.DefaultFont.Typeface, Variant: sans, Size: vg.Points(size)},
			XAlign: draw.XCenter, YAlign: draw.YTop, Handler: plot.DefaultTextHandler}
	}
	ts, ss := head(13, color.Black), head(11, color.Gray{Y: 70})
	y := c.Max.Y - pad
	c.FillText(ts, vg.Point{X: c.Center().X, Y: y}, f.title)
	y -= ts.Height(f.title) + vg.Points(3)
	c.FillText(ss, vg.Point{X: c.Center().X, Y: y}, f.sub)
	y -= ss.Height(f.sub) + pad
	body := draw.Crop(c, 0, 0, 0, y-c.Max.Y)

	// The y label is drawn here too: gonum centres it, for room, at the
	// arithmetic middle of the axis range, which on a log axis sits near
	// the top and shrinks the plot.
	ylabel := f.p.Y.Label.Text
	ls := f.p.Y.Label.TextStyle
	ls.Rotation, ls.XAlign, ls.YAlign = math.Pi/2, draw.XCenter, draw.YTop
	lh := ls.Height(ylabel)
	xAxis := vg.Points(40) // about the x axis' height: centres the label on the data
	c.FillText(ls, vg.Point{X: body.Min.X + pad, Y: (body.Min.Y + xAxis + body.Max.Y) / 2}, ylabel)

	leg := f.p.Legend
	f.p.Legend = plot.NewLegend() // drawn below, outside the axes
	f.p.Y.Label.Text = ""
	defer func() { f.p.Legend, f.p.Y.Label.Text = leg, ylabel }()
	lw := leg.Rectangle(body).Size().X
	f.p.Draw(draw.Crop(body, 2*pad+lh, -(lw + 2*pad), pad/2, 0))
	leg.Draw(draw.Crop(body, body.Size().X-lw-pad, -pad, 0, -pad))
}
