package ecprune_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ecprune/ecprune"
)

// Prune the bundled MNIST MLP to 90% sparsity with ec+, the recommended
// method, on 256 calibration images.
func Example() {
	m, err := ecprune.Load("testdata/models/mnist_mlp_gemm.onnx")
	if err != nil {
		log.Fatal(err)
	}
	data := ecprune.Data{Inputs: []string{"testdata/data/mnist_calib_x.npy"}, Labels: "testdata/data/mnist_calib_y.npy"}
	res, err := ecprune.Prune(context.Background(), m, data, ecprune.Options{Sparsity: 0.9})
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	dir, _ := os.MkdirTemp("", "ecprune-example")
	defer os.RemoveAll(dir)
	if err := res.Save(filepath.Join(dir, "pruned.onnx")); err != nil {
		log.Fatal(err)
	}
	r := res.Report
	fmt.Printf("%s removed %d of %d weights: %d non-zeros left of %d\n", r.Method, r.Removed, r.Prunable, r.After.NonZeros, r.Before.NonZeros)
	fmt.Printf("accuracy %.3f -> %.3f\n", *r.Calibration.Original.Accuracy, *r.Calibration.Pruned.Accuracy)
	// Output:
	// ec+ removed 239580 of 266200 weights: 26620 non-zeros left of 266200
	// accuracy 0.953 -> 0.953
}

// Compare ec with magnitude pruning at two sparsities on statistics
// computed once.
func ExampleSweep() {
	m, err := ecprune.Load("testdata/models/pde_mlp.onnx")
	if err != nil {
		log.Fatal(err)
	}
	calib := ecprune.Data{Inputs: []string{"testdata/data/pde_calib_x.npy"}}
	test := ecprune.Data{Inputs: []string{"testdata/data/pde_test_x.npy"}, Labels: "testdata/data/pde_test_y.npy"}
	r, err := ecprune.Sweep(context.Background(), m, calib, ecprune.SweepOptions{
		Methods: []string{"ec", "magnitude"}, Sparsities: []float64{0.5, 0.9}, Test: test,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range r.Points {
		fmt.Printf("%-9s %.1f: test loss %.3g\n", p.Method, p.Sparsity, *p.Test.Loss)
	}
	// Output:
	// ec        0.5: test loss 0.000333
	// ec        0.9: test loss 0.0154
	// magnitude 0.5: test loss 0.0394
	// magnitude 0.9: test loss 0.0668
}
