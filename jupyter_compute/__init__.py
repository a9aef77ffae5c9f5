"""jupyter_compute: compute targets in Jupyter, from the sidebar, the notebook and the command line."""
from ._version import __version__  # noqa: F401  (the package's version)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-compute"}]


def _jupyter_server_extension_points():
    from .app import ComputeApp
    return [{"module": "jupyter_compute", "app": ComputeApp}]


def load_ipython_extension(ipython):
    """``%load_ext jupyter_compute``: the ``%compute`` and ``%%compute`` magics."""
    from .notebook.magics import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython):
    from .notebook.magics import unload_ipython_extension as unload
    unload(ipython)
