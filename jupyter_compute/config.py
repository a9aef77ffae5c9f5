"""Settings every face shares, read from ``jupyter_compute_config.py`` (or ``.json``) on the Jupyter config path.

The server extension, the CLI and the magics all call ``load_config()``, so a setting means the
same thing in every process of the user.
"""
from __future__ import annotations

import os

from jupyter_core.paths import jupyter_config_path, jupyter_data_dir
from traitlets import Bool, Dict, Float, Int, List, Unicode, default
from traitlets.config import Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader, ConfigFileNotFound

CONFIG_FILE = "jupyter_compute_config"

CLOUDS = {
    "AzureCloud": ("https://management.azure.com", "https://login.microsoftonline.com"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us"),
}


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
                 "Azure ML workspace, else 'local'.").tag(config=True)

    kernel_ready_timeout = Float(60.0, help="Seconds a starting kernel has to answer before its start fails.").tag(config=True)

    monitor_interval = Float(1.0, help="Seconds between checks that running targets' processes are alive.").tag(config=True)

    max_concurrent_starts = Int(
        4, help="Targets this process starts at once; further starts wait their turn.").tag(config=True)

    allowed_hosts = List(
        Unicode(), default_value=[],
        help="If set, remote targets may only point at these host names or addresses "
             "(for example ['127.0.0.1', 'localhost'] in tests).").tag(config=True)

    confirm_self_stop = Bool(True, help="Require explicit confirmation to stop the machine you are on.").tag(config=True)

    def effective_db_path(self) -> str:
        return os.environ.get("JUPYTER_COMPUTE_DB") or self.db_path


class AzureML(Configurable):
    """How jupyter_compute reaches Azure Machine Learning."""

    cloud = Unicode("AzureCloud", help="Azure cloud: AzureCloud, AzureChinaCloud or AzureUSGovernment.").tag(config=True)

    resource_manager_endpoint = Unicode(
        "", help="Resource Manager endpoint; overrides the cloud's. JUPYTER_COMPUTE_ARM_ENDPOINT overrides this.",
    ).tag(config=True)

    authority_host = Unicode(
        "", help="Azure AD (Entra ID) sign-in authority, e.g. https://login.microsoftonline.com; overrides the "
                 "cloud's, for private clouds and proxies. JUPYTER_COMPUTE_AUTHORITY_HOST overrides this.",
    ).tag(config=True)

    tenant_id = Unicode(
        "", help="Tenant (directory id or domain) device-code sign-in signs in to; empty: the tenants of work and "
                 "school accounts ('organizations').").tag(config=True)

    api_version = Unicode("2023-04-01", help="REST api-version of Microsoft.MachineLearningServices.").tag(config=True)

    poll_interval = Float(5.0, help="Seconds between polls of a long-running Azure operation, unless Azure asks otherwise.").tag(config=True)

    retry_total = Int(4, help="Times a request refused with 429 or 5xx is retried before it is reported unavailable.").tag(config=True)

    retry_backoff_factor = Float(0.8, help="Backoff factor between retries, in seconds.").tag(config=True)

    retry_backoff_max = Float(30.0, help="Longest wait between retries, in seconds.").tag(config=True)

    request_timeout = Float(
        60.0, help="Seconds Azure has to accept a connection, and then to send each part of its answer, before "
                   "the request is retried (and after retry_total tries reported unavailable).").tag(config=True)

    workspaces = List(Dict(), default_value=[], help="Workspaces to show, each {subscription_id, resource_group, workspace_name, alias}.").tag(config=True)

    blob_endpoint = Unicode(
        "", help="Blob service URL used instead of the one a datastore names, with {account} for the storage "
                 "account (for example http://127.0.0.1:10000/{account}), for private endpoints, proxies and "
                 "emulators. JUPYTER_COMPUTE_BLOB_ENDPOINT overrides this.").tag(config=True)

    job_environment = Unicode(
        "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu",
        help="Environment of cells sent as jobs when %%compute has no --environment: a curated or registered "
             "environment as NAME, NAME:VERSION or NAME@latest, or its full id.").tag(config=True)

    # -- compute instances: living on one, and running cells on one -------------------------------
    detect_instance = Bool(
        True, help="On an Azure ML compute instance, use its workspace (no config.json needed) and its managed "
                   "identity, and treat it as 'this instance'.").tag(config=True)

    instance_file = Unicode(
        "/mnt/azmnt/.nbvm", help="The file in which a compute instance names itself and its domain "
                                 "(instance=..., domainsuffix=...).").tag(config=True)

    instance_token_scope = Unicode(
        "", help="Scope of the Azure AD bearer tokens sent to a compute instance's Jupyter server; empty: the "
                 "Resource Manager endpoint's scope.").tag(config=True)

    instance_kernel_name = Unicode(
        "", help="Kernelspec of the kernel %%compute starts on a compute instance's Jupyter server; empty: the "
                 "server's default.").tag(config=True)

    token_refresh_margin = Float(
        300.0, help="Seconds before a bearer token expires that it is replaced with a fresh one.").tag(config=True)

    def blob_account_url(self, account: str) -> str | None:
        """The configured blob endpoint for a storage account, or None to use the datastore's own."""
        template = os.environ.get("JUPYTER_COMPUTE_BLOB_ENDPOINT") or self.blob_endpoint
        return template.replace("{account}", account).rstrip("/") if template else None

    def endpoint(self) -> str:
        env = os.environ.get("JUPYTER_COMPUTE_ARM_ENDPOINT")
        if env:
            return env.rstrip("/")
        if self.resource_manager_endpoint:
            return self.resource_manager_endpoint.rstrip("/")
        return CLOUDS.get(self.cloud, CLOUDS["AzureCloud"])[0]

    def authority(self) -> str:
        env = os.environ.get("JUPYTER_COMPUTE_AUTHORITY_HOST")
        if env:
            return env.rstrip("/")
        if self.authority_host:
            return self.authority_host.rstrip("/")
        return CLOUDS.get(self.cloud, CLOUDS["AzureCloud"])[1]


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
