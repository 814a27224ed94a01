//go:build !openblas

package main

// blasName names the matrix-product implementation this binary uses.
const blasName = "gonum (pure Go)"
