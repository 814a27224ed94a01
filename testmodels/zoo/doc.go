// Package zoo lists the model zoo: small PyTorch exports of
// the architectures whose dense layers ecprune must prune (CNNs with
// pooling and BatchNorm, MobileNetV3, residual blocks, nn.TransformerEncoder,
// ViTs, a Swin Transformer, ResMLP, MLP-Mixer, LSTM and GRU heads,
// einsum, tied weights, MLPs, old opset 9 exports), each with calibration
// inputs and torch's outputs on them.
//
// The files live in testdata/zoo, written by make_zoo.py in this folder
// (run with /usr/bin/python3; it needs Debian's python3-torch,
// python3-torchvision and python3-onnx). They are generated once and
// committed, so tests need no Python. The manifest zoo.json says, for each
// model, how many nn.Linear weights it holds and which ONNX tensors hold
// them: the acceptance tests (zoo_test.go here, cmd/ecprune/zoo_test.go)
// check ecprune against that, not against what ecprune itself finds.
package zoo
