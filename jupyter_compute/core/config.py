"""Settings every face shares, read from ``jupyter_compute_config.py`` (or ``.json``) on the Jupyter config path.

The server extension, the CLI and the magics all call ``load_config()``, so a setting means the
same thing in every process of the user.
"""
from __future__ import annotations

import os

from jupyter_core.paths import jupyter_config_path, jupyter_data_dir
from traitlets import Bool, Float, Int, List, Unicode, default
from traitlets.config import Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader, ConfigFileNotFound

CONFIG_FILE = "jupyter_compute_config"


class ComputeConfig(Configurable):
    """Where the store lives and how targets run; shared by every face."""

    db_path = Unicode(
        help="Path of the sqlite store shared by the server, kernels and the CLI. "
             "The JUPYTER_COMPUTE_DB environment variable overrides it.",
    ).tag(config=True)

    @default("db_path")
    def _db_path_default(self) -> str:
        return os.path.join(jupyter_data_dir(), "jupyter_compute", "compute.db")

    runtime_dir = Unicode(
        help="Folder for the connection files and logs of targets started on this machine.",
    ).tag(config=True)

    @default("runtime_dir")
    def _runtime_dir_default(self) -> str:
        return os.path.join(os.path.dirname(self.effective_db_path()), "runtime")

    default_workspace = Unicode(
        "", help="Workspace the CLI and magics use when none is named; empty picks a discovered "
                 "workspace (a cloud workspace's config.json), else 'local'.").tag(config=True)

    kernel_ready_timeout = Float(60.0, help="Seconds a starting kernel has to answer before its start fails.").tag(config=True)

    monitor_interval = Float(1.0, help="Seconds between checks that running targets' processes are alive.").tag(config=True)

    max_concurrent_starts = Int(
        4, help="Targets this process starts at once; further starts wait their turn.").tag(config=True)

    allowed_hosts = List(
        Unicode(), default_value=[],
        help="If set, remote targets may only point at these host names or addresses "
             "(for example ['127.0.0.1', 'localhost'] in tests).").tag(config=True)

    confirm_self_stop = Bool(True, help="Require explicit confirmation to stop the machine you are on.").tag(config=True)

    families = List(
        Unicode(), default_value=[],
        help="Families of compute to load beside those installed (the 'jupyter_compute.families' entry "
             "points), each as 'module:attribute' naming a Family.").tag(config=True)

    disabled_families = List(
        Unicode(), default_value=[],
        help="Names of installed families not to load (see 'jupyter compute kinds' for the families).").tag(config=True)

    kernelspec_dir = Unicode(
        "", help="Folder the kernelspecs of targets are written to, so that every Jupyter client finds them; "
                 "empty: the 'kernels' folder of the Jupyter data directory (where 'ipykernel install --user' "
                 "writes).").tag(config=True)

    def effective_db_path(self) -> str:
        return os.environ.get("JUPYTER_COMPUTE_DB") or self.db_path

    def effective_kernelspec_dir(self) -> str:
        if not self.kernelspec_dir:
            # Fixed when first needed: a process keeps writing where it began, even if its
            # environment changes later (a sync still running as the process winds down).
            self.kernelspec_dir = os.path.join(jupyter_data_dir(), "kernels")
        return self.kernelspec_dir


def load_config(extra: Config | None = None, config_dirs: list[str] | None = None) -> Config:
    """Read ``jupyter_compute_config.{json,py}`` from every Jupyter config dir, later dirs winning."""
    cfg = Config()
    for d in reversed(config_dirs if config_dirs is not None else jupyter_config_path()):
        for loader_cls, ext in ((JSONFileConfigLoader, ".json"), (PyFileConfigLoader, ".py")):
            try:
                cfg.merge(loader_cls(CONFIG_FILE + ext, path=d).load_config())
            except ConfigFileNotFound:
                continue
    if extra is not None:
        cfg.merge(extra)
    return cfg
