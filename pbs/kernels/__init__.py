"""Attention kernels that execute a SparsePlan. Imported lazily: ``import pbs`` does not need triton."""
