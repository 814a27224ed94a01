// Package ecplus is ec+: sequential, error-aware EC pruning with weight
// reconstruction and a Gauss-Newton refit of all biases (Prune; the
// method is described in the README and docs/METHOD.md). It is a package of its own
// because it is a pipeline, not a ranking: it runs the calibration data
// through the network many times, keeps per-sample caches within memory
// budgets, and solves linear systems, all of which the selection in
// package prune does not need. It builds on prune (budgets from
// prune.Select, the shared tie order, prune.Plan as result); prune does
// not import it.
//
// Files by concern:
//   - ecplus.go: Options, DefaultOptions and the entry point Prune.
//   - budget.go: the weights each layer, row and round may lose, and the
//     memory and cost thresholds of the caches and solvers.
//   - allocate.go: the optional refinement of the layers' budgets by a
//     probe that measures what their removals cost.
//   - original.go: the pass over the original network (g and z0 for every
//     layer) and Prep, which takes them from the statistics pass instead.
//   - sequential.go: the layer-by-layer greedy selection; sums.go and
//     resident.go hold its per-layer sums and in-memory per-sample data.
//   - recon.go: least-squares reconstruction of the kept weights.
//   - view.go: what the refit matches (squared error or KL on logits);
//     refit.go: the Levenberg-Marquardt loop; jacobian.go: gradients,
//     Gauss-Newton matrices and their products.
//   - store.go: the float64/float32 store of per-sample values;
//     progress.go: the reports to Options.Progress.
//   - tie.go: layers of tied weights (onnxio.Tie), which keep the one-shot
//     selection over their tie and get only the bias correction.
//
// The linear solvers are in prune/internal/solve.
//
// Outputs are deterministic: the same inputs, options and seed give the
// same plan bit for bit, with or without a progress hook
// (Options.Progress), which only observes.
package ecplus
