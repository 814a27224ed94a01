// Package scaling holds the tests that guard how the cost of a run grows
// with the number of layers: every stage of pruning (loading and
// extraction, the statistics pass, ec's and magnitude's selection, ec+'s
// sequential passes and refit, the export, the unit analysis) must stay
// linear in the depth of the network.
//
// The tests run a stage on a deep chain of tiny layers
// (testmodels.DeepMLP) at depths N and 4N and compare the two runs' CPU
// time and allocated bytes, which do not depend on how busy the machine
// is the way wall time does. A linear stage grows about 4x; the bounds
// are 8x for time and 6x for bytes, far below the 16x of a quadratic
// stage. The stages whose quadratic parts are cheap per layer (scans of
// the op list, copies of a pointer per value) only show them at depths of
// thousands, so those stages are tested on their own at such depths with
// as little data as they need.
//
// The package has no code of its own: it sits above onnxio, analysis,
// prune, prune/ecplus and export, which none of them could import in its tests without
// a cycle.
package scaling
