"""jav's benchmarks: each module a `python -m benchmarks.NAME` command writing its figures for RESULTS.md."""

import jav  # noqa: F401  (first: jav.platforms keeps JAX off libtpu on a host with no TPU chip, before a benchmark imports JAX)
