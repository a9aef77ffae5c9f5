"""Targets as Jupyter kernels: the ``jupyter-compute`` kernel provisioner (``provisioner``), and
what a client without provisioners runs instead (``unprovisioned``). The kernelspecs themselves
are written by ``core.kernels.sync_kernelspecs``."""
