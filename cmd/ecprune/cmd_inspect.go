package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ecprune/ecprune"
	"github.com/ecprune/ecprune/internal/plain"
	"github.com/ecprune/ecprune/onnxio"
)

func init() {
	register(&command{
		name:     "inspect",
		summary:  "show a model's summary and the dense layers ecprune finds in it",
		usage:    "MODEL",
		examples: []string{"ecprune inspect model.onnx", "ecprune inspect --json model.onnx | jq '.layers[].prunable'"},
		run:      runInspect,
		files:    func(args []string) ([]fileRef, []fileRef) { return refs("the model", args...), nil },
	})
}

type ioInfo struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"` // -1: dynamic
	ElemType string  `json:"elem_type"`
}

type layerInfo struct {
	Name     string   `json:"name"`
	Node     string   `json:"node"`
	Pattern  string   `json:"pattern"`
	Out      int      `json:"out"`
	In       int      `json:"in"`
	Layout   string   `json:"stored_layout"`
	Type     string   `json:"elem_type"`
	Bias     bool     `json:"bias"`
	Next     []string `json:"followed_by"`
	Params   int      `json:"params"`
	NonZeros int      `json:"nonzeros"`
	Prunable bool     `json:"prunable"`
	Reason   string   `json:"reason,omitempty"`
	Role     string   `json:"role"`     // from the graph's structure (onnxio.Role)
	Analysis string   `json:"analysis"` // analysis.Treatment: output-level, local objective or not prunable
}

type inspectResult struct {
	File       string            `json:"file"`
	Bytes      int64             `json:"bytes"`
	IRVersion  int64             `json:"ir_version"`
	Opsets     map[string]int64  `json:"opsets"`
	Producer   string            `json:"producer"`
	Inputs     []ioInfo          `json:"inputs"`
	Outputs    []ioInfo          `json:"outputs"`
	Params     int               `json:"dense_params"`
	NonZeros   int               `json:"dense_nonzeros"`
	Evaluable  bool              `json:"evaluable"`
	Reason     string            `json:"reason,omitempty"`
	Layers     []layerInfo       `json:"layers"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	NodeCount  int               `json:"nodes"`
	InitCount  int               `json:"initializers"`
	SparseInit int               `json:"sparse_initializers"`
	Units      []unitInfo        `json:"units"` // --granularity neuron: which layers' output units can go
}

func runInspect(e *env, args []string) error {
	if len(args) != 1 {
		return usagef("inspect takes one model file")
	}
	ld, err := e.loadModel(args[0], false)
	if err != nil {
		return err
	}
	r := inspectModel(ld)
	return e.output(r, func(w io.Writer) { printInspect(w, r) })
}

func inspectModel(ld *loaded) *inspectResult {
	mp := ld.model.Proto
	g := onnxio.NewGraph(mp.Graph)
	size, _ := ld.model.DiskSize()
	r := &inspectResult{
		File: ld.path, Bytes: size, IRVersion: mp.GetIrVersion(), Opsets: map[string]int64{},
		Producer:  strings.TrimSpace(mp.GetProducerName() + " " + mp.GetProducerVersion()),
		Evaluable: ld.net.Evaluable, Reason: ld.net.Reason,
		NodeCount: len(mp.Graph.Node), InitCount: len(mp.Graph.Initializer), SparseInit: len(mp.Graph.SparseInitializer),
	}
	for _, o := range mp.OpsetImport {
		d := o.GetDomain()
		if d == "" {
			d = "ai.onnx"
		}
		r.Opsets[d] = o.GetVersion()
	}
	for _, in := range g.RealInputs {
		r.Inputs = append(r.Inputs, ioInfo{in.GetName(), onnxio.ValueShape(in), onnxio.TypeName(onnxio.ValueElemType(in))})
	}
	for _, o := range mp.Graph.Output {
		r.Outputs = append(r.Outputs, ioInfo{o.GetName(), onnxio.ValueShape(o), onnxio.TypeName(onnxio.ValueElemType(o))})
	}
	for _, kv := range mp.MetadataProps {
		if r.Metadata == nil {
			r.Metadata = map[string]string{}
		}
		r.Metadata[kv.GetKey()] = kv.GetValue()
	}
	treatments := ecprune.Treatments(ld.m)
	for _, l := range ld.net.Layers {
		nz := l.NonZeros()
		r.Layers = append(r.Layers, layerInfo{
			Name: l.Name, Node: l.Node, Pattern: l.Pattern, Out: l.Out, In: l.In, Layout: l.WeightLayout.String(),
			Type: onnxio.TypeName(l.WeightType), Bias: l.B != nil, Next: l.Next, Params: l.Params(), NonZeros: nz,
			Prunable: l.Prunable, Reason: l.Reason, Role: l.Role.String(), Analysis: treatments[l],
		})
		r.Params += l.Params()
		r.NonZeros += nz
	}
	r.Units = ecprune.Units(ld.m)
	return r
}

func shapeString(s []int64) string {
	if s == nil {
		return "?"
	}
	parts := make([]string, len(s))
	for i, d := range s {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func printInspect(w io.Writer, r *inspectResult) {
	fmt.Fprintf(w, "%s: %s on disk, ir_version %d, opsets %s, producer %q\n", r.File, humanBytes(r.Bytes), r.IRVersion, plain.Opsets(r.Opsets), r.Producer)
	fmt.Fprintf(w, "%d nodes, %d initializers", r.NodeCount, r.InitCount)
	if r.SparseInit > 0 {
		fmt.Fprintf(w, ", %d sparse initializers", r.SparseInit)
	}
	fmt.Fprintln(w)
	for _, in := range r.Inputs {
		fmt.Fprintf(w, "input  %s %s %s\n", in.Name, shapeString(in.Shape), in.ElemType)
	}
	for _, o := range r.Outputs {
		fmt.Fprintf(w, "output %s %s %s\n", o.Name, shapeString(o.Shape), o.ElemType)
	}
	fmt.Fprintf(w, "dense layers: %d, %d weights (%d non-zero)\n", len(r.Layers), r.Params, r.NonZeros)
	if !r.Evaluable {
		fmt.Fprintf(w, "not analysable: %s\n", r.Reason)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tlayer\trole\tpattern\tW (out x in)\tbias\tfollowed by\tparams\tanalysis")
	for i, l := range r.Layers {
		pr := l.Analysis
		bias := "no"
		if l.Bias {
			bias = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%dx%d %s\t%s\t%s\t%d\t%s\n", i, l.Name, l.Role, l.Pattern, l.Out, l.In, l.Type, bias, strings.Join(l.Next, ","), l.Params, pr)
	}
	tw.Flush()
	printUnits(w, r.Units)
}

func humanBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
