"""Sparse training: dynamic drop-and-grow (DiSparse dynamic, min-max DST, RigL), ERK densities,
the min-max framework's reweighted-L1 compression pipeline and DiSparse's static protocol.
See docs/SPARSE.md."""
