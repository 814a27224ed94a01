// Package solve holds the linear solvers of ec+ (package ecplus) and the
// products they are built from, apart from what they are solving for.
//
// The bias refit's Levenberg-Marquardt steps solve (G + mu D) d = -grad
// for several dampings mu per linearisation, so each solver here is set up
// once and then solves for any mu (Damped): Dense factors the assembled
// Gauss-Newton matrix by Cholesky, through gonum's LAPACK (a factorisation
// per damping, cheap for up to about a thousand parameters); Scaled runs
// Lanczos on the same matrix, scaled so that every damping is a shift of
// the identity and one basis serves them all; Lanczos does that with G
// known only through products G v, when the matrix is too large to
// assemble. gonum offers the factorisation and the products, but no
// Krylov solver that reuses one basis across shifts, hence Lanczos here.
//
// Weight reconstruction solves one damped least-squares problem per row
// of a layer on a shared Gram matrix with per-row masks (Masked): one
// Cholesky factorisation per row, or, above a cost bound, conjugate
// gradients on all rows at once (MaskedCG), whose iterations are single
// matrix products.
//
// It is internal: its contracts (layouts, what the damping scales) are
// ec+'s, not a general-purpose API. The order of operations is part of
// ec+'s bit-for-bit reproducible output: a change here changes pruned
// models.
package solve
