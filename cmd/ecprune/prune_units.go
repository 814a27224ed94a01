package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ecprune/ecprune"
)

func printUnitReport(w io.Writer, r *unitPruneReport) {
	fmt.Fprintf(w, "%s -> %s: neurons, method %s, %.1f%% %s, objective %s, %d calibration samples (derivatives: %s)\n",
		r.Model, r.Output, r.Method, 100*r.Sparsity, r.Scope, r.Objective, r.Samples, r.Derivatives)
	fmt.Fprintf(w, "removed %d of %d removable units\n\n", r.Removed, r.Removable)
	printBeforeAfter(w, []beforeAfter{
		{"size on disk", r.Before.Bytes, r.After.Bytes, true},
		{"gzip size", r.Before.GzipBytes, r.After.GzipBytes, true},
		{"parameters", r.Before.Params, r.After.Params, false},
		{"dense multiply-adds per sample", r.Before.MACs, r.After.MACs, false},
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "units of\tinto\tkept\tpredicted error")
	for _, g := range r.Groups {
		kept := fmt.Sprintf("%d of %d", g.Kept, g.Units)
		if g.Heads > 0 {
			kept += fmt.Sprintf(" (%d of %d heads)", g.KeptHeads, g.Heads)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.4g\n", g.Layer, g.Consumer, kept, g.Predicted)
	}
	tw.Flush()
	for _, s := range r.Fixed {
		fmt.Fprintf(w, "not removable: %s\n", s)
	}
	fmt.Fprintln(w)
	printQuality(w, "calibration", r.Calibration)
	if r.HoldoutQ != nil {
		printQuality(w, "holdout", *r.HoldoutQ)
	}
}

// unitInfo says whether a layer's output units can be removed by
// --granularity neuron, and into which layer they feed, or why not.
type unitInfo = ecprune.UnitInfo

func printUnits(w io.Writer, units []unitInfo) {
	if len(units) == 0 {
		return
	}
	fmt.Fprintln(w, "\noutput units (prune --granularity neuron):")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	var attn []unitInfo
	for _, u := range units {
		switch {
		case u.Heads > 0 || !u.Removable && strings.HasPrefix(u.Reason, "heads: "):
			attn = append(attn, u)
		case u.Removable:
			fmt.Fprintf(tw, "%s\t%d units\tremovable (into %s)\n", u.Layer, u.Units, u.Consumer)
		default:
			fmt.Fprintf(tw, "%s\t%d units\tnot removable: %s\n", u.Layer, u.Units, u.Reason)
		}
	}
	tw.Flush()
	if len(attn) == 0 {
		return
	}
	fmt.Fprintln(w, "\nattention heads (removed head_dim units at a time):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, u := range attn {
		if u.Removable {
			fmt.Fprintf(tw, "%s\t%d heads of %d\tremovable (rows of %s, columns of %s)\n", u.Layer, u.Heads, u.HeadDim, strings.Join(u.Projections, ", "), u.Consumer)
		} else {
			fmt.Fprintf(tw, "%s\t\tnot removable: %s\n", u.Layer, strings.TrimPrefix(u.Reason, "heads: "))
		}
	}
	tw.Flush()
}
