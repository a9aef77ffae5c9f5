"""Remote machines over SSH (kind ``ssh``): an attached machine whose cells run in an ipykernel
started there and reached through one SSH connection.

Attach checks the host key against known_hosts (nothing is trusted silently: an unknown key is
refused with its fingerprint until the user accepts exactly that fingerprint), logs in, and
looks at the machine. Start hands the target to a detached supervisor (``supervisor``) that
holds the connection, runs the kernel on the remote's loopback, carries its channels to local
loopback ports, and keeps the link alive; the target outlives the server or CLI that started it.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import inspect
import ipaddress
import json
import os
import re
import shlex
import signal
import stat
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import Field, SecretStr, field_validator

from ...core import processes as procs
from ...core.errors import BackendRefused, ComputeError, InvalidRequest, Unavailable
from ...core.models import SECRET, Node, Size, Spec, State, Target, utcnow
from ...core.secrets import for_store
from . import on_remote
from ...core.backend import Backend, KindSpec, OperationContext, Outcome, stored_target
from ...core.kernels import KernelSpecInfo, TargetKernel
from ...core.route import Route

if TYPE_CHECKING:
    import asyncssh

#: Seconds to reach and log in to a host.
CONNECT_TIMEOUT = 15.0
#: A link that answers no keepalive for INTERVAL * (COUNT + 1) seconds is taken for dropped.
KEEPALIVE_INTERVAL = 2.0
KEEPALIVE_COUNT_MAX = 2
#: Seconds a remote helper command (probe, launch, stop) may take.
REMOTE_COMMAND_TIMEOUT = 60.0
#: Seconds the supervisor has to end the remote kernel when asked to stop.
STOP_GRACE = 30.0

KNOWN_HOSTS_FILE = "ssh_known_hosts"
SECRET_FIELDS = ("password",)
REMOTE_SOURCE = inspect.getsource(on_remote)
FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._-]{0,252}[A-Za-z0-9_])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- the spec --------------------------------------------------------------------------------------
def check_host(value: str) -> str:
    """A host name or IP address (IPv6 with or without brackets), never an option or user@host."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if not v:
        raise ValueError("must not be empty")
    if "@" in v:
        raise ValueError("give the user as username, not as user@host")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    if not _HOST_RE.match(v):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return v


def parse_jump_host(value: str) -> tuple[str | None, str, int]:
    """``[USER@]HOST[:PORT]`` -> (user, host, port)."""
    user, sep, rest = value.rpartition("@")
    user = user if sep else None
    if user is not None and (not user or _CONTROL.search(user) or " " in user):
        raise ValueError(f"{value!r}: the user before '@' is not valid")
    port = 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"{value!r} is not [USER@]HOST[:PORT]")
            port = _port(tail[1:], value)
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        port = _port(p, value)
    else:
        host = rest
    return user, check_host(host), port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: the port must be a number from 1 to 65535")
    return int(text)


def check_private_key_file(value: str) -> str:
    """The key file's absolute path, refused as OpenSSH refuses it when others may read it."""
    if _CONTROL.search(value):
        raise ValueError("must be a path without control characters")
    path = os.path.abspath(os.path.expanduser(value))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a file")
    if st.st_mode & 0o077:
        raise ValueError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: a private key must not be "
            f"accessible by others, and OpenSSH refuses such a key too. Run 'chmod 600 {path}'")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not readable by you")
    return path


class SSHSpec(Spec):
    host: str = Field(..., min_length=1, max_length=255, description="Host name or IP address of the machine.")
    port: int = Field(22, ge=1, le=65535, description="SSH port of the machine.")
    username: str | None = Field(None, min_length=1, max_length=256,
                                 description="User to log in as; default: your user name on this machine.")
    ssh_private_key: str | None = Field(
        None, max_length=4096,
        description="Path of the private key file to log in with (on this machine). Like OpenSSH, a key file "
                    "that others can read is refused.")
    password: SecretStr | None = Field(
        None, max_length=4096, json_schema_extra=SECRET,
        description="Password to log in with. Kept in the OS keyring (or a file only you can read); "
                    "never returned.")
    jump_host: str | None = Field(None, max_length=512,
                                  description="[USER@]HOST[:PORT] of a bastion to connect through; "
                                              "it takes the same key or password.")
    python: str = Field("python3", min_length=1, max_length=4096,
                        description="Python interpreter on the machine; it needs ipykernel.")
    accept_host_key: list[str] | None = Field(
        None, description="SHA256 fingerprints of host keys to trust, as shown when a key is unknown. "
                          "Used when attaching; the accepted keys go to known_hosts.")
    updatable = frozenset({"description", "tags", "python", "ssh_private_key", "password", "username"})

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("username")
    @classmethod
    def _username(cls, v: str | None) -> str | None:
        if v is not None and (_CONTROL.search(v) or " " in v or v.startswith("-")):
            raise ValueError(f"{v!r} is not a user name")
        return v

    @field_validator("ssh_private_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return check_private_key_file(v) if v else None

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v == "":
                raise ValueError("must not be empty; leave it out to log in with a key")
            # Wrapped here so that the model's whitespace stripping never touches a password.
            return SecretStr(v)
        return v

    @field_validator("jump_host")
    @classmethod
    def _jump(cls, v: str | None) -> str | None:
        if v:
            parse_jump_host(v)
        return v or None

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        if _CONTROL.search(v) or v.startswith("-"):
            raise ValueError(f"{v!r} is not an interpreter path or name")
        return v

    @field_validator("accept_host_key", mode="before")
    @classmethod
    def _fingerprints(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p for p in re.split(r"[\s,]+", v) if p]
        if isinstance(v, list):
            for fp in v:
                if not isinstance(fp, str) or not FINGERPRINT_RE.match(fp):
                    raise ValueError(f"{fp!r} is not a SHA256 host key fingerprint (SHA256:…, as shown when the "
                                     "key was refused)")
        return v

    def public(self) -> dict[str, Any]:
        out = super().public()
        out.pop("accept_host_key", None)
        return out

    def secret_values(self) -> dict[str, str]:
        return {"password": self.password.get_secret_value()} if self.password is not None else {}


# -- host keys -------------------------------------------------------------------------------------
def known_hosts_path(db_path: str) -> str:
    """The project's own known_hosts, beside the store; ~/.ssh/known_hosts is read too, never written."""
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), KNOWN_HOSTS_FILE)


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _HostKeys:
    """known_hosts for one endpoint: which keys are known, and what the host offered."""

    def __init__(self, files: list[str], accepted: Iterable[str]):
        self.files = [f for f in files if os.path.isfile(f)]
        self.accepted = set(accepted)
        self.known = 0
        self.offered: asyncssh.SSHKey | None = None
        self.newly_trusted: asyncssh.SSHKey | None = None

    def match(self, host: str, addr: str, port: int | None):
        import asyncssh

        known = asyncssh.import_known_hosts("")
        for path in self.files:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                asyncssh.import_known_hosts(text)  # all or nothing: a file that does not parse trusts nothing
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            known.load(text)
        result = known.match(host, addr, port)
        self.known = len(result[0]) + len(result[1])
        return result


@functools.cache
def _client_class() -> type:
    """The SSH client that checks an unknown host key against those the user accepted: made on
    first use, so that only a process that opens a connection imports asyncssh (a tenth of a
    second of every CLI call and server start otherwise)."""
    import asyncssh

    class _Client(asyncssh.SSHClient):
        def __init__(self, keys: _HostKeys):
            self.keys = keys

        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            # Called only for a key known_hosts does not hold; trusted only if the user named it.
            self.keys.offered = key
            if key.get_fingerprint("sha256") in self.keys.accepted:
                self.keys.newly_trusted = key
                return True
            return False

    return _Client


@dataclass
class Endpoint:
    host: str
    port: int
    username: str

    def __str__(self) -> str:
        return f"{self.username}@{_host_pattern(self.host, self.port)}"


@dataclass
class Link:
    """An SSH connection to a target, through its jump host if it has one."""
    conn: asyncssh.SSHClientConnection
    jump: asyncssh.SSHClientConnection | None = None
    endpoint: Endpoint | None = None
    #: Host keys accepted by fingerprint during this connect: (host, port, key) to remember.
    accepted: list[tuple[str, int, asyncssh.SSHKey]] = field(default_factory=list)

    async def close(self) -> None:
        for c in (self.conn, self.jump):
            if c is not None:
                c.close()
        for c in (self.conn, self.jump):
            if c is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.wait_closed(), 5)

    async def wait_closed(self) -> None:
        await self.conn.wait_closed()


def endpoints(spec: dict) -> tuple[Endpoint, Endpoint | None]:
    user = spec.get("username") or getpass.getuser()
    target = Endpoint(spec["host"], int(spec.get("port") or 22), user)
    jump = None
    if spec.get("jump_host"):
        ju, jh, jp = parse_jump_host(spec["jump_host"])
        jump = Endpoint(jh, jp, ju or user)
    return target, jump


async def load_client_key(path: str | None):
    if not path:
        return None
    import asyncssh

    try:
        return await asyncio.to_thread(asyncssh.read_private_key, path)
    except asyncssh.KeyImportError as e:
        why = str(e)
        if "assphrase" in why:
            why = "it is protected by a passphrase; use a key without one (or log in with a password)"
        raise InvalidRequest(f"ssh_private_key: {path} cannot be used: {why}", field="/ssh_private_key",
                             reason="bad_key") from None
    except OSError as e:
        raise InvalidRequest(f"ssh_private_key: cannot read {path}: {e.strerror}", field="/ssh_private_key") from None


def key_candidates(directory: str) -> list[dict[str, Any]]:
    """The private key files in ``directory``, to pick one from: paths and permissions, never contents.

    A file counts when it starts like a PEM or OpenSSH private key; a key others may read is listed
    with the reason the ssh backend refuses it.
    """
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    keys = []
    for entry in entries:
        try:
            if entry.name.endswith(".pub") or not entry.is_file():
                continue
            with open(entry.path, "rb") as f:
                head = f.read(64)
            mode = stat.S_IMODE(entry.stat().st_mode)
        except OSError:
            continue
        if not (head.startswith(b"-----BEGIN ") and b"PRIVATE KEY-----" in head):
            continue
        try:
            check_private_key_file(entry.path)
            problem = None
        except ValueError as e:
            problem = str(e)
        keys.append({"path": entry.path, "name": entry.name, "mode": f"{mode:04o}",
                     "readable_by_others": bool(mode & 0o044), "usable": problem is None, "problem": problem})
    return keys


async def connect(spec: dict, password: str | None, *, known_hosts: str, accept: Iterable[str] = (),
                  keepalive: bool = False, timeout: float = CONNECT_TIMEOUT) -> Link:
    """Log in to the target of ``spec`` (through its jump host), checking every host key."""
    import asyncssh

    target, jump = endpoints(spec)
    files = [known_hosts, os.path.expanduser("~/.ssh/known_hosts")]
    accept = list(accept or ())
    key = await load_client_key(spec.get("ssh_private_key"))
    common: dict[str, Any] = {
        "client_keys": [key] if key is not None else None, "password": password, "agent_path": None,
        "config": None, "connect_timeout": timeout, "kbdint_auth": False if password is None else True,
        "gss_auth": False, "host_based_auth": False,
        # AES-GCM first (the rest of asyncssh's defaults after it): one call per packet into the
        # cryptography library where ChaCha20-Poly1305 takes several, and every kernel message is
        # a packet or two.
        "encryption_algs": "^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    }
    if keepalive:
        common.update(keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT_MAX)
    link_accepted: list[tuple[str, int, asyncssh.SSHKey]] = []

    async def one(ep: Endpoint, tunnel=None) -> asyncssh.SSHClientConnection:
        keys = _HostKeys(files, accept)
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                ep.host, ep.port, username=ep.username, known_hosts=keys.match, tunnel=tunnel,
                client_factory=lambda: _client_class()(keys), **common), timeout + 5)
        except asyncssh.HostKeyNotVerifiable:
            raise _host_key_error(ep, keys, known_hosts) from None
        except asyncssh.PermissionDenied:
            how = " and ".join(w for w, v in (("the key", key), ("the password", password)) if v)
            raise BackendRefused(f"{ep} refused the login with {how or 'no credentials'}",
                                 reason="auth_failed") from None
        except asyncssh.DisconnectError as e:
            raise BackendRefused(f"{_host_pattern(ep.host, ep.port)} closed the SSH connection: {e.reason}",
                                 reason="ssh_refused") from None
        except asyncssh.ChannelOpenError as e:
            raise Unavailable(f"the jump host could not open a connection to {_host_pattern(ep.host, ep.port)}: "
                              f"{e.reason}", reason="host_unreachable") from None
        except (OSError, asyncio.TimeoutError) as e:
            why = "no answer within %g s" % timeout if isinstance(e, asyncio.TimeoutError) else (
                e.strerror or str(e) or type(e).__name__)
            raise Unavailable(f"cannot reach {_host_pattern(ep.host, ep.port)}: {why}",
                              reason="host_unreachable") from None
        if keys.newly_trusted is not None:
            link_accepted.append((ep.host, ep.port, keys.newly_trusted))
        return conn

    jump_conn = await one(jump) if jump else None
    try:
        conn = await one(target, tunnel=jump_conn)
    except BaseException:
        if jump_conn is not None:
            jump_conn.close()
        raise
    return Link(conn, jump_conn, target, link_accepted)


def _host_key_error(ep: Endpoint, keys: _HostKeys, known_hosts: str) -> InvalidRequest:
    where = _host_pattern(ep.host, ep.port)
    key = keys.offered
    if key is None:
        return InvalidRequest(f"the host key of {where} could not be verified", field="/accept_host_key",
                              reason="unknown_host_key")
    fp = key.get_fingerprint("sha256")
    alg = key.get_algorithm()
    if keys.known:
        return InvalidRequest(
            f"the host key of {where} has CHANGED: it now presents {alg} {fp}, which matches none of the keys "
            f"known for it (in {', '.join(keys.files)}). Someone may be intercepting the connection. If you know "
            f"the key changed, check the new fingerprint on the host and accept it with --accept-host-key {fp}.",
            field="/accept_host_key", reason="host_key_changed",
            details={"host": ep.host, "port": ep.port, "algorithm": alg, "fingerprint": fp})
    return InvalidRequest(
        f"the host key of {where} is not known: {alg} {fp}. Check it on the host (ssh-keygen -lf "
        f"/etc/ssh/ssh_host_*_key.pub) and accept it with --accept-host-key {fp} "
        f"(accept_host_key in the API); it is then kept in {known_hosts}.",
        field="/accept_host_key", reason="unknown_host_key",
        details={"host": ep.host, "port": ep.port, "algorithm": alg, "fingerprint": fp})


def remember_host_keys(known_hosts: str, accepted: list[tuple[str, int, asyncssh.SSHKey]]) -> None:
    """Write accepted keys to the project's known_hosts, replacing older keys of the same host."""
    if not accepted:
        return
    from ...core.secrets import _locked

    os.makedirs(os.path.dirname(known_hosts), mode=0o700, exist_ok=True)
    with _locked(known_hosts + ".lock"):
        try:
            with open(known_hosts, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        for host, port, key in accepted:
            pattern = _host_pattern(host, port)
            lines = [ln for ln in lines if ln.split(" ", 1)[0] != pattern]
            alg, data = key.export_public_key("openssh").decode().split()[:2]
            lines.append(f"{pattern} {alg} {data}")
        tmp = f"{known_hosts}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, known_hosts)


# -- running the remote helper ---------------------------------------------------------------------
def remote_command(python: str, command: str, arg: dict | None = None) -> str:
    """The command line run by the remote user's shell; every word is quoted."""
    return shlex.join([python, "-", command, json.dumps(arg or {})])


async def run_remote(link: Link, python: str, command: str, arg: dict | None = None, *,
                     timeout: float = REMOTE_COMMAND_TIMEOUT) -> dict:
    """Run one command of the remote helper and return its (last) JSON answer."""
    import asyncssh

    where = link.endpoint.host if link.endpoint else "the host"
    try:
        result = await asyncio.wait_for(
            link.conn.run(remote_command(python, command, arg), input=REMOTE_SOURCE, check=False), timeout)
    except asyncio.TimeoutError:
        raise Unavailable(f"{where} did not finish '{command}' within {timeout:g} s", reason="remote_timeout") from None
    except (asyncssh.Error, OSError) as e:
        raise Unavailable(f"the SSH connection to {where} failed during '{command}': {e}",
                          reason="host_unreachable") from None
    stdout, stderr = str(result.stdout or ""), str(result.stderr or "")
    if result.exit_status == 127:
        raise InvalidRequest(f"{python!r} was not found on {where}: set python (--python) to the remote "
                             "machine's Python interpreter", field="/python", reason="no_python")
    answers = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            if line.startswith("{"):
                answers.append(json.loads(line))
    if result.exit_status != 0 or not answers:
        detail = (stderr.strip() or stdout.strip())[-800:]
        if "SyntaxError" in detail:
            detail = f"{python} is too old (Python 3.8 or newer is needed): {detail}"
        raise BackendRefused(f"running {python} on {where} failed (exit status {result.exit_status}): {detail}",
                             reason="remote_failed")
    return answers[-1]


def no_ipykernel_message(answer: dict, host: str) -> str:
    py = answer.get("python") or "python3"
    return (f"ipykernel is not installed for {py} (Python {answer.get('python_version', '?')}) on {host}. "
            f"Install it there with '{py} -m pip install ipykernel', or set --python to an interpreter that "
            "has it.")


# -- the backend -----------------------------------------------------------------------------------
class SSHBackend(Backend):
    secret_fields = SECRET_FIELDS
    kinds = {
        "ssh": KindSpec(
            "ssh", "Remote machines",
            "A machine you reach over SSH. Cells run in an ipykernel started there, its channels tunnelled "
            "over the one SSH connection; the link is kept alive and re-established after a cut.",
            managed=False, operations=("attach", "update", "start", "stop", "restart", "detach", "nodes"),
            attach_model=SSHSpec, keeps_variables=True,
            examples=[{"name": "gpu-box", "host": "gpu.example.org", "username": "me",
                       "ssh_private_key": "~/.ssh/id_ed25519"},
                      {"name": "lab", "host": "10.0.0.7", "port": 2222, "username": "me", "password": "…",
                       "jump_host": "me@bastion.example.org", "python": "/opt/conda/bin/python"}]),
    }

    def __init__(self, workspace_id, store, settings):
        super().__init__(workspace_id, store, settings)
        self._probed: dict[str, tuple[dict, list]] = {}

    # -- places ------------------------------------------------------------------------------------
    @property
    def db_path(self) -> str:
        return self.settings.compute.effective_db_path()

    @property
    def secrets(self):
        return for_store(self.db_path)

    @property
    def known_hosts(self) -> str:
        return known_hosts_path(self.db_path)

    # -- reading -----------------------------------------------------------------------------------
    async def list_targets(self, stored: list[dict]) -> list[Target]:
        return [self._target(r) for r in stored]

    async def get_target(self, name: str, stored: dict | None) -> Target | None:
        return self._target(stored) if stored else None

    def _target(self, row: dict) -> Target:
        rt = row.get("runtime") or {}
        spec = row.get("spec") or {}
        facts = rt.get("facts") or {}
        props: dict[str, Any] = {"username": spec.get("username")}
        for k in ("hostname", "python_version", "ipykernel", "platform"):
            if facts.get(k) is not None:
                props[k if k != "hostname" else "remote_hostname"] = facts[k]
        if facts and not facts.get("ipykernel"):
            props["ipykernel"] = "not installed"
        remote = rt.get("remote") or {}
        if remote.get("pid"):
            props["remote_pid"] = remote["pid"]
        for k in ("link", "reconnects", "started"):
            if rt.get(k) is not None:
                props[k] = rt[k]
        size = None
        if facts:
            size = Size(name=facts.get("hostname") or spec.get("host", "remote"), vcpus=facts.get("vcpus"),
                        memory_gb=facts.get("memory_gb"), gpus=facts.get("gpus"))
        running = row["state"] == "running"
        return stored_target(row, properties=props, size=size,
                             nodes={"current": 1 if running else 0, "min": 0, "max": 1,
                                    "running": 1 if running else 0})

    # -- validation --------------------------------------------------------------------------------
    def validate_spec(self, kind: str, data: dict[str, Any], *, attach: bool) -> Spec:
        spec = super().validate_spec(kind, data, attach=attach)
        if attach:
            self._need_credentials(spec, has_stored_password=False)
            if spec.username is None:
                spec.username = getpass.getuser()
        return spec

    @staticmethod
    def _need_credentials(spec: SSHSpec, *, has_stored_password: bool) -> None:
        if not spec.ssh_private_key and spec.password is None and not has_stored_password:
            raise InvalidRequest("give ssh_private_key (a key file) or password to log in with",
                                 field="/ssh_private_key", reason="no_credentials")

    def _check_allowed(self, spec: SSHSpec) -> None:
        allowed = list(self.settings.compute.allowed_hosts or [])
        if not allowed:
            return
        hosts = [("/host", spec.host)]
        if spec.jump_host:
            hosts.append(("/jump_host", parse_jump_host(spec.jump_host)[1]))
        for ptr, host in hosts:
            if host not in allowed:
                raise InvalidRequest(f"{host} is not among the allowed hosts ({', '.join(allowed)}); "
                                     "see ComputeConfig.allowed_hosts", field=ptr, reason="host_not_allowed")

    async def precheck(self, name: str, kind: str, spec: Spec, *, force: bool = False) -> None:
        """Log in and look at the machine before anything is stored: a wrong host key, password or
        interpreter is refused here, with nothing left behind."""
        assert isinstance(spec, SSHSpec)
        self._check_allowed(spec)
        password = spec.secret_values().get("password")
        link = await connect(spec.model_dump(), password, known_hosts=self.known_hosts,
                             accept=spec.accept_host_key or ())
        try:
            facts = (await run_remote(link, spec.python, "probe", timeout=30))["facts"]
        finally:
            await link.close()
        self._probed[name] = (facts, link.accepted)

    # -- operations --------------------------------------------------------------------------------
    async def attach(self, name: str, kind: str, spec: Spec, ctx: OperationContext) -> Outcome:
        assert isinstance(spec, SSHSpec)
        probed = self._probed.pop(name, None)
        try:
            if probed is None:
                await self.precheck(name, kind, spec)
                probed = self._probed.pop(name)
            facts, accepted = probed
            for field_name, value in spec.secret_values().items():
                await asyncio.to_thread(self.secrets.put, self.workspace_id, name, field_name, value)
            if accepted:
                await asyncio.to_thread(remember_host_keys, self.known_hosts, accepted)
                fps = ", ".join(k.get_fingerprint("sha256") for _, _, k in accepted)
                await ctx.progress(f"host key accepted: {fps}")
        except BaseException:
            await asyncio.to_thread(self.secrets.delete, self.workspace_id, name, SECRET_FIELDS)
            raise
        note = "ready to start" if facts.get("ipykernel") else no_ipykernel_message(facts, spec.host)
        await ctx.progress(f"attached {facts.get('hostname', spec.host)} "
                           f"({facts.get('vcpus')} CPUs, {facts.get('memory_gb')} GB, {facts.get('gpus')} GPUs); {note}")
        return Outcome(State.stopped, provider_state="attached", runtime={"facts": facts})

    async def update(self, target: Target, changes: dict[str, Any]) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        merged = {**row["spec"], **changes}
        for k in [k for k, v in merged.items() if v is None]:
            merged.pop(k)
        spec = Backend.validate_spec(self, target.kind, merged, attach=True)
        assert isinstance(spec, SSHSpec)
        stored_pw = "password" not in changes and await asyncio.to_thread(
            self.secrets.has, self.workspace_id, target.name, "password")
        self._need_credentials(spec, has_stored_password=bool(stored_pw))
        if "password" in changes:
            if spec.password is None:
                await asyncio.to_thread(self.secrets.delete, self.workspace_id, target.name, ["password"])
            else:
                await asyncio.to_thread(self.secrets.put, self.workspace_id, target.name, "password",
                                        spec.password.get_secret_value())
        await self._write_spec(target.name, row["spec"], spec.public())

    async def start(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"]
        if procs.alive(rt.get("supervisor")):
            # Its supervisor still serves it (a start while the link is re-established).
            await ctx.progress("the SSH supervisor is still running; waiting for its link")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline and procs.alive(rt.get("supervisor")):
                if rt.get("link") == "up":
                    return Outcome(State.running, provider_state="connected")
                await asyncio.sleep(0.2)
                rt = (await self.store.get_target(self.workspace_id, target.name))["runtime"]
            await procs.off_loop(_end_supervisor, rt.get("supervisor"), 5.0)
        # A dead supervisor's identity must not make the new start look abandoned meanwhile.
        await self.store.update_target(self.workspace_id, target.name, runtime_merge={"supervisor": None})
        cfg = self.settings.compute
        os.makedirs(cfg.runtime_dir, mode=0o700, exist_ok=True)
        await ctx.progress("launching the SSH supervisor")
        argv = [sys.executable, "-m", "jupyter_compute.families.ssh.supervisor",
                "--db", cfg.effective_db_path(), "--workspace", self.workspace_id, "--name", target.name,
                "--operation", ctx.op_id, "--runtime-dir", cfg.runtime_dir,
                "--ready-timeout", str(cfg.kernel_ready_timeout)]
        return await self.hand_off(ctx, argv, "SSH link supervisor")

    async def stop(self, target: Target, ctx: OperationContext) -> Outcome:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"]
        if procs.alive(rt.get("supervisor")):
            await ctx.progress("ending the remote kernel")
            await procs.off_loop(_end_supervisor, rt["supervisor"], STOP_GRACE)
            row = await self.store.get_target(self.workspace_id, target.name)
            rt = row["runtime"]
        remote = rt.get("remote")
        if remote:
            # The supervisor is gone (or could not reach the host): end the kernel from here.
            await ctx.progress(f"ending the remote kernel (pid {remote.get('pid')}) on {row['spec'].get('host')}")
            link = await self._connect(row)
            try:
                await run_remote(link, row["spec"].get("python", "python3"), "stop", remote, timeout=30)
            finally:
                await link.close()
        for key in ("connection_file", "control"):
            procs.remove_quietly(rt.get(key))
        return Outcome(State.stopped, runtime={"facts": rt.get("facts") or {}})

    async def restart(self, target: Target, ctx: OperationContext) -> Outcome:
        outcome = await self.stop(target, ctx)
        await self.store.update_target(self.workspace_id, target.name, runtime=outcome.runtime)
        return await self.start(target, ctx)

    async def detach(self, target: Target, ctx: OperationContext) -> None:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"] if row else {}
        if rt.get("supervisor") or rt.get("remote"):
            try:
                await self.stop(target, ctx)
            except ComputeError as e:
                raise type(e)(f"{e.message}. Not detached, so that the kernel can still be stopped; "
                              "stop it once the host is reachable, then detach", reason=e.reason) from None
        await asyncio.to_thread(self.secrets.delete, self.workspace_id, target.name, SECRET_FIELDS)
        row = await self.store.get_target(self.workspace_id, target.name)
        procs.remove_quietly(((row or {}).get("runtime") or {}).get("log_file"))

    async def _connect(self, row: dict) -> Link:
        password = await asyncio.to_thread(self.secrets.get, self.workspace_id, row["name"], "password")
        return await connect(row["spec"], password, known_hosts=self.known_hosts)

    # -- nodes and routes --------------------------------------------------------------------------
    async def nodes(self, target: Target) -> list[Node]:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"] if row else {}
        spec = row["spec"] if row else {}
        facts = dict(rt.get("facts") or {})
        if target.state == State.running and rt.get("control"):
            with contextlib.suppress(Exception):
                answer = await control_request(rt["control"], {"op": "probe"}, timeout=15)
                if answer.get("ok"):
                    facts = answer["facts"]
        props = {k: facts.get(k) for k in ("vcpus", "memory_gb", "gpus", "gpu_list", "load", "platform",
                                           "python", "python_version", "ipykernel")}
        remote = rt.get("remote") or {}
        if remote.get("pid"):
            props["kernel_pid"] = remote["pid"]
        return [Node(id=facts.get("hostname") or spec.get("host", target.name),
                     state="running" if target.state == State.running else target.state.value,
                     address=spec.get("host"), port=spec.get("port", 22), properties=props)]

    async def route(self, target: Target) -> Route:
        row = await self.store.get_target(self.workspace_id, target.name)
        rt = row["runtime"]
        try:
            connection = await asyncio.to_thread(procs.read_json, rt["connection_file"])
        except (KeyError, OSError, ValueError):
            raise Unavailable(f"'{target.name}' has no tunnel to its kernel; restart it",
                              reason="no_tunnel") from None
        from .route import SSHRoute  # zmq and jupyter_client, only once a cell is sent
        return SSHRoute(connection, rt.get("control"), remote_pid=(rt.get("remote") or {}).get("pid"),
                        target=target.name)

    def kernel_specs(self, row: dict) -> list[KernelSpecInfo]:
        facts = (row.get("runtime") or {}).get("facts") or {}
        version = ".".join(str(facts.get("python_version") or "").split(".")[:2])
        label = f"Python {version}" if version else "Python"
        return [KernelSpecInfo(f"{label} · {row['name']} (SSH)",
                               metadata={"kind": row["kind"], "host": (row.get("spec") or {}).get("host")})]

    async def kernel(self, target: Target, variant: str = "") -> TargetKernel:
        from .kernels import SSHTargetKernel
        row = await self.store.get_target(self.workspace_id, target.name)
        return SSHTargetKernel(self, target, row)

    async def field_choices(self, kind: str, field: str) -> dict[str, Any] | None:
        if field != "ssh_private_key":
            return None
        directory = os.path.expanduser("~/.ssh")
        return {"directory": directory, "keys": await asyncio.to_thread(key_candidates, directory)}

    async def reconcile(self) -> None:
        """A supervisor killed from outside: record it, since nobody else will."""
        for row in await self.store.find_targets(kind="ssh", workspace=self.workspace_id,
                                                 states=["starting", "running", "unknown"]):
            rt = row["runtime"]
            sup = rt.get("supervisor")
            if row["state"] in ("starting", "running", "unknown") and sup and not procs.alive(sup):
                await self.store.update_target(
                    self.workspace_id, row["name"], expect_state=("starting", "running", "unknown"),
                    expect_runtime={"supervisor": sup}, state="failed", provider_state=None,
                    runtime_merge={"supervisor": None, "link": None},
                    errors=[{"message": "the SSH supervisor exited unexpectedly; the remote kernel may still be "
                                        "running: start re-attaches to it, stop ends it",
                             "code": "supervisor_died", "at": utcnow().isoformat()}])


def _end_supervisor(ident: str | None, grace: float) -> None:
    """Ask a supervisor to end its kernel and exit; kill it if it has not within ``grace`` seconds."""
    import time

    if not procs.signal_ident(ident, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and procs.alive(ident):
        time.sleep(0.05)
    procs.signal_ident(ident, signal.SIGKILL)


async def control_request(path: str, request: dict, *, timeout: float = 10.0) -> dict:
    """One request to a supervisor's control socket, one answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("the supervisor closed the control connection")
        return json.loads(line)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
