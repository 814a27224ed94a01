package analysis

import (
	"path/filepath"
	"testing"
)

// BenchmarkCollectCNN: the statistics pass on LeNet-5 (mnist_cnn.onnx:
// two Conv+Relu+MaxPool blocks, then three Gemm layers), 1000 digits,
// exact reverse mode (K = 10), float64.
//
//	go test ./analysis -run '^$' -bench CollectCNN -benchtime 5x
func BenchmarkCollectCNN(b *testing.B) {
	net := loadBenchNet(b, filepath.Join("..", "testdata", "models", "mnist_cnn.onnx"))
	d := digits(b)
	d.shape = []int{1, 28, 28}
	benchCollect(b, net, d, StatsOptions{Batch: 256}, 10)
}
