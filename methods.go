package ecprune

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ecprune/ecprune/analysis"
	"github.com/ecprune/ecprune/prune"
)

// Method is a pruning method of the registry: what it needs and how it
// runs on a session's statistics. Each method_*.go file registers its
// methods; help texts, validation and suggestions come from here, so that
// no code outside the registry tells methods apart by name.
type Method struct {
	Name string
	// Help is one line for --method's help.
	Help string
	// Needs says what a run of the method needs beyond the statistics.
	Needs Needs
	// Compensates: removals shift biases.
	Compensates bool
	// Recommended is the method an empty Options.Method selects.
	Recommended bool
	// Baseline methods are listed after the others in help texts.
	Baseline bool
	// Predicts: the sum of the removed weights' scores is the first-order
	// predicted output error (under the output objective).
	Predicts bool
	// DataFree: the scores do not depend on the calibration data, so
	// all-zero scores are no sign of degenerate data.
	DataFree bool
	// sweepRank orders the methods a sweep compares when none are named
	// (0: only when named); the label-based ones join with labels.
	sweepRank int
	// base is the method whose scores this one starts from (its budgets)
	// and writes for Result.WriteScores; "" for its own.
	base string
	// score computes the method's own per-weight scores (nil: base's).
	score func(s *session) (*analysis.Scores, error)
	// plan selects what to remove at the selection options.
	plan func(s *session, opt prune.Options) (*prune.Plan, error)
	// units removes hidden units (Neuron granularity); nil: not available.
	units func(s *session, u *unitRun) (*prune.UnitPlan, *analysis.UnitStats, error)
}

// Needs is what a method needs of the run.
type Needs struct {
	// Labels: the method uses the loss gradient.
	Labels bool
	// Derivatives: the method reuses the statistics pass's per-sample
	// output derivatives, kept while it runs, and the statistics
	// themselves (so that a one-shot run may not spend them unless
	// derivatives are estimated by probes).
	Derivatives bool
	// Sequential: the method prunes layer by layer on the network whose
	// earlier layers are already pruned, from EC's per-layer budgets.
	Sequential bool
}

var registry []*Method

// register adds a method; a name registered twice is a programming error.
func register(m *Method) {
	if lookup(m.Name) != nil {
		panic("ecprune: method " + m.Name + " registered twice")
	}
	registry = append(registry, m)
}

func lookup(name string) *Method {
	for _, m := range registry {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Methods lists the registered methods: the recommended one first, then
// by name.
func Methods() []*Method {
	out := slices.Clone(registry)
	slices.SortFunc(out, func(a, b *Method) int {
		switch {
		case a.Recommended != b.Recommended:
			if a.Recommended {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// MethodNames lists the registered methods' names in Methods' order.
func MethodNames() []string {
	var names []string
	for _, m := range Methods() {
		names = append(names, m.Name)
	}
	return names
}

// Recommended is the recommended method.
func Recommended() *Method {
	for _, m := range registry {
		if m.Recommended {
			return m
		}
	}
	panic("ecprune: no recommended method registered")
}

// UnknownMethodError is a method name the registry does not know.
type UnknownMethodError struct {
	Name    string
	Suggest string // the closest registered name, if it looks like a typo
}

func (e *UnknownMethodError) Error() string {
	var names []string
	for _, m := range registry {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	msg := fmt.Sprintf("unknown method %q (known: %s)", e.Name, strings.Join(names, ", "))
	if e.Suggest != "" {
		msg += " (did you mean " + e.Suggest + "?)"
	}
	return msg
}

// MethodByName is the registered method of that name (empty: the
// recommended one), or an *UnknownMethodError with the closest name.
func MethodByName(name string) (*Method, error) {
	if name == "" {
		return Recommended(), nil
	}
	if m := lookup(name); m != nil {
		return m, nil
	}
	return nil, &UnknownMethodError{Name: name, Suggest: Suggest(name, MethodNames())}
}

// MethodHelp is one line listing the methods, for --method's help.
func MethodHelp() string {
	var parts, baselines []string
	for _, m := range Methods() {
		if m.Baseline {
			baselines = append(baselines, m.Name)
		} else {
			parts = append(parts, m.Name+" ("+m.Help+")")
		}
	}
	return strings.Join(parts, ", ") + ", or a baseline: " + strings.Join(baselines, ", ")
}

// SweepMethods are the methods a sweep compares when none are named: the
// label-based ones only with labels.
func SweepMethods(labels bool) []*Method {
	var out []*Method
	for _, m := range registry {
		if m.sweepRank > 0 && (labels || !m.Needs.Labels) {
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b *Method) int { return a.sweepRank - b.sweepRank })
	return out
}

// Units reports whether the method can remove hidden units (Neuron).
func (m *Method) Units() bool { return m.units != nil }

// Suggest is the candidate closest to s by edit distance when it is close
// enough to be a typo ("" otherwise).
func Suggest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is Levenshtein's distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
