// Package testmodels is a catalogue of small, deterministic ONNX models laid
// out exactly as PyTorch's exporter (torch.onnx.export) writes them: Gemm
// MLPs across opsets, the MatMul+Add form of nn.Linear on rank-3 inputs,
// every activation torch emits (including the Erf and Tanh GELU
// decompositions), BatchNorm, Dropout, shape-only ops, constants,
// residual and multi-head graphs, float16/float64 models, typed-field and
// external-data storage, and models that must not or cannot be pruned.
//
// It exists so that the extraction, evaluation, differentiation and export
// packages test against the same shapes real users feed ecprune, without
// shipping binary fixtures or needing PyTorch: every case is built in Go,
// cheaply, with weights drawn from a generator seeded by the case and
// tensor names. The layouts (node and value names, attribute sets, weight
// orientation, operand order, IR version per opset, Constant placement) were
// checked against torch 1.13 exports for opsets 9-17; cases at opsets 18-21
// follow the same exporter's conventions for the ops those opsets add.
//
// Each Case says how many dense layers an extractor should find, how many
// are prunable (see Case for the definition every package shares), the
// tolerance to use against ONNX Runtime, and, for models that must be
// refused, which op is unsupported.
package testmodels
