"""The lossc benchmark suite: the workloads W1-W9 of BENCHMARKS.md and streaming at
bandwidth, run side by side in one process against numpy written by hand and, when
installed, JAX and PyTorch.

    make bench                                   # the whole suite, a few minutes
    python -m benchmarks.run --quick             # a smoke run with smaller sizes
    python -m benchmarks.run --only W2,W5        # a subset
"""
