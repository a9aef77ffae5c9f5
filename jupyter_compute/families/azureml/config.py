"""How jupyter_compute reaches Azure Machine Learning: ``c.AzureML`` in ``jupyter_compute_config.py``."""
from __future__ import annotations

import difflib
import os

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

CLOUDS = {
    "AzureCloud": ("https://management.azure.com", "https://login.microsoftonline.com"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us"),
}


class AzureML(Configurable):
    """How jupyter_compute reaches Azure Machine Learning."""

    cloud = Unicode("AzureCloud", help="Azure cloud: AzureCloud, AzureChinaCloud or AzureUSGovernment.").tag(config=True)

    @validate("cloud")
    def _known_cloud(self, proposal):
        """A misspelt cloud would otherwise send sign-ins and requests to the public cloud."""
        name = proposal["value"]
        if name in CLOUDS:
            return name
        close = difflib.get_close_matches(name, CLOUDS, n=1, cutoff=0.6) or [
            c for c in CLOUDS if c.lower() == name.strip().lower()]
        hint = f" Did you mean {close[0]}?" if close else ""
        raise TraitError(f"c.AzureML.cloud is '{name}', which is not an Azure cloud: use one of "
                         f"{', '.join(CLOUDS)}.{hint}")

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
        return CLOUDS[self.cloud][0]

    def authority(self) -> str:
        env = os.environ.get("JUPYTER_COMPUTE_AUTHORITY_HOST")
        if env:
            return env.rstrip("/")
        if self.authority_host:
            return self.authority_host.rstrip("/")
        return CLOUDS[self.cloud][1]
