"""Dask clusters: the distributed engine for work that outgrows one machine.

``backend`` (the ``dask-cluster`` and ``dask`` kinds), ``supervisor`` (a managed cluster's
detached owner), ``route`` (cells as tasks), ``on_worker`` (what a cell runs inside the workers).
"""
from ...core.registry import Family


def family() -> Family:
    from .backend import DaskBackend
    return Family("dask", order=20, backends=[DaskBackend])
