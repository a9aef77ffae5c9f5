"""Remote machines over SSH.

``backend`` (the ``ssh`` kind: specs, host keys, attach), ``supervisor`` (the detached process that
holds the SSH connection and the kernel's tunnels), ``route`` (the kernel route over the tunnel),
``on_remote`` (the agent that runs on the far machine).
"""
from ...core.registry import Family


def family() -> Family:
    from .backend import SSHBackend
    return Family("ssh", order=10, backends=[SSHBackend])
