"""This machine and local kernels: the embedded default, which needs no account.

``backend`` (the ``local`` and ``local-kernel`` kinds), ``supervisor`` (the detached process that
owns a kernel).
"""
from ...core.registry import Family


def family() -> Family:
    from .backend import LocalBackend
    return Family("local", order=0, backends=[LocalBackend])
