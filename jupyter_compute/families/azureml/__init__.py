"""Azure Machine Learning: compute instances, compute clusters (cells as jobs) and attached compute.

``backend`` (the kinds), ``arm`` (Resource Manager client and errors), ``workspaces`` (which
workspaces this user sees, and the instance this runs on), ``config`` (``c.AzureML``),
``credential`` and ``signin``, ``specs``/``attached``/``resources`` (Azure's shapes in this
project's terms), ``instance`` (living on a compute instance), ``jobs`` and ``job_route`` (cells as
command jobs), ``in_job`` (the program each job runs).
"""
from ...core.registry import Family


def family() -> Family:
    from .workspaces import AzureWorkspaces
    return Family("azureml", order=40, workspaces=AzureWorkspaces)
