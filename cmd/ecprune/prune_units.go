package main

import (
	"fmt"
	"io"
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
		fmt.Fprintf(tw, "%s\t%s\t%d of %d\t%.4g\n", g.Layer, g.Consumer, g.Kept, g.Units, g.Predicted)
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
	for _, u := range units {
		if u.Removable {
			fmt.Fprintf(tw, "%s\t%d units\tremovable (into %s)\n", u.Layer, u.Units, u.Consumer)
		} else {
			fmt.Fprintf(tw, "%s\t%d units\tnot removable: %s\n", u.Layer, u.Units, u.Reason)
		}
	}
	tw.Flush()
}
