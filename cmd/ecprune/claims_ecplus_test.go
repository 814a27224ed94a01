package main

import (
	"path/filepath"
	"testing"

	"github.com/ecprune/ecprune/testmodels/ort"
)

// TestClaimECPlusBeatsSparseGPT: issue 15's acceptance, measured in ONNX
// Runtime on the test split. The default method, with no labels and no
// flag, has a lower test loss than sparsegpt and sparsegpt+bias at 70-95%,
// with --scope layer and global, on LeNet-300-100 and the PDE model; at
// 50% it is within 0.01 (MNIST) or 10% (PDE MSE). Label-free ec+ on MNIST
// at 80 and 90% is within 1.5 accuracy points and 15% test loss of ec+
// with labels.
func TestClaimECPlusBeatsSparseGPT(t *testing.T) {
	if testing.Short() {
		t.Skip("prunes 60 models")
	}
	shared := sharedDir(t)
	ort.Require(t)
	for _, m := range []struct {
		model, data string
		cls         bool
	}{{"mnist_mlp_gemm.onnx", "mnist", true}, {"pde_mlp.onnx", "pde", false}} {
		x := filepath.Join(shared, "data", m.data, "test_x.npy")
		y := filepath.Join(shared, "data", m.data, "test_y.npy")
		for _, scope := range []string{"global", "layer"} {
			for _, s := range []string{"0.5", "0.7", "0.8", "0.9", "0.95"} {
				ecp, _ := ortLoss(t, pruneShared(t, shared, m.model, m.data, "ec+", s, false, "--scope", scope), x, y, m.cls)
				for _, base := range []string{"sparsegpt", "sparsegpt+bias"} {
					l, _ := ortLoss(t, pruneShared(t, shared, m.model, m.data, base, s, false, "--scope", scope), x, y, m.cls)
					t.Logf("%s %s %s: ec+ %.4g, %s %.4g", m.model, scope, s, ecp, base, l)
					ok := ecp < l
					if s == "0.5" {
						ok = ecp <= l+0.01
						if !m.cls {
							ok = ecp <= 1.1*l
						}
					}
					if !ok {
						t.Errorf("%s, %s ranking, %s: ec+ test loss %.4g, %s %.4g", m.model, scope, s, ecp, base, l)
					}
				}
			}
		}
	}
	x := filepath.Join(shared, "data", "mnist", "test_x.npy")
	y := filepath.Join(shared, "data", "mnist", "test_y.npy")
	for _, s := range []string{"0.8", "0.9"} {
		free, freeAcc := ortLoss(t, pruneShared(t, shared, "mnist_mlp_gemm.onnx", "mnist", "ec+", s, false), x, y, true)
		lab, labAcc := ortLoss(t, pruneShared(t, shared, "mnist_mlp_gemm.onnx", "mnist", "ec+", s, true), x, y, true)
		t.Logf("%s: label-free %.4f (%.4f), with labels %.4f (%.4f)", s, free, freeAcc, lab, labAcc)
		if labAcc-freeAcc > 0.015 || free > 1.15*lab {
			t.Errorf("%s: label-free loss %.4f accuracy %.4f, with labels %.4f %.4f", s, free, freeAcc, lab, labAcc)
		}
	}
}
