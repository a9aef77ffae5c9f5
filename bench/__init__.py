"""Benchmarks for jupyter_compute, each figure measured beside its peer in the same run (``make bench``)."""
