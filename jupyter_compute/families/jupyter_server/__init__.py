"""Any Jupyter server (JupyterHub, a colleague's server) as a target, attached by URL and credentials.

``backend`` (the ``jupyter`` kind); its cells travel by ``transport.websocket``, its REST calls by
``transport.jupyter_client``, both shared with the Azure ML family's compute instances.
"""
from ...core.registry import Family


def family() -> Family:
    from .backend import RemoteJupyterBackend
    return Family("jupyter_server", order=30, backends=[RemoteJupyterBackend])
