"""The verbs of ``jupyter compute`` and ``%compute``: their grammar, carrying them out against the
core, and how their results read as text. The command line (``cli``) and the magics
(``notebook.magics``) both use this module; neither imports the other.
"""
from __future__ import annotations

import argparse
import os
from types import SimpleNamespace
from datetime import datetime, timezone
from typing import Any, Callable

import yaml
from pydantic import BaseModel


def whole_number(text: str) -> int:
    """An option's integer, refused in the words the forms use."""
    try:
        return int(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise argparse.ArgumentTypeError(f"must be a whole number, not {shown!r}") from None


#: CLI option -> spec field, for every kind that has the field. Later families add theirs here.
SPEC_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--size", {"help": "VM size or machine size name"}),
    ("--min-nodes", {"type": whole_number, "help": "Fewest nodes a cluster scales down to"}),
    ("--max-nodes", {"type": whole_number, "help": "Most nodes a cluster scales up to"}),
    ("--idle-seconds-before-scaledown", {"type": whole_number, "help": "Idle seconds before a cluster node is released"}),
    ("--idle-shutdown-minutes", {"type": whole_number, "help": "Idle minutes before the target stops itself"}),
    ("--priority", {"choices": ["dedicated", "low-priority"], "help": "Node priority"}),
    ("--resource-id", {"help": "Azure resource id of the compute to attach"}),
    ("--python", {"help": "Python interpreter: a path, venv or conda env for a local kernel; "
                          "the remote interpreter of an ssh target"}),
    ("--env", {"action": "append", "metavar": "K=V", "help": "Environment variable (repeatable)"}),
    ("--cwd", {"help": "Working directory"}),
    ("--memory-limit-mb", {"type": whole_number, "help": "Stop the target when it uses more memory than this"}),
    ("--description", {"help": "Free text shown in lists"}),
    ("--tag", {"action": "append", "metavar": "K=V", "help": "Tag (repeatable)"}),
    ("--host", {"help": "Host name or IP address of a remote machine"}),
    ("--port", {"type": whole_number, "help": "SSH port of a remote machine (default 22)"}),
    ("--username", {"help": "User to log in as on a remote machine (default: your user name here)"}),
    ("--ssh-private-key", {"metavar": "PATH", "help": "Private key file to log in with; others must not be able "
                                                      "to read it"}),
    ("--jump-host", {"metavar": "[USER@]HOST[:PORT]", "help": "Bastion to reach a remote machine through"}),
    ("--accept-host-key", {"action": "append", "metavar": "FINGERPRINT",
                           "help": "Trust the host key with this SHA256 fingerprint, as shown when it was refused "
                                   "(repeatable, e.g. for a jump host too)"}),
    ("--threads-per-node", {"type": whole_number, "help": "Threads of each Dask worker"}),
    ("--scheduler-address", {"help": "Dask scheduler to attach: tcp://HOST:PORT or tls://HOST:PORT"}),
    ("--tls-ca-file", {"help": "CA certificate (PEM) of a tls:// Dask scheduler"}),
    ("--tls-client-cert", {"help": "Client certificate (PEM) for a tls:// Dask scheduler"}),
    ("--tls-client-key", {"help": "Private key (PEM) of the client certificate"}),
    ("--url", {"help": "Base URL of a Jupyter server, e.g. https://hub.example.org/user/me/"}),
    ("--kernel-name", {"help": "Kernelspec of the kernel started on a Jupyter server (default: the server's)"}),
    # Azure ML compute instances and clusters
    ("--ssh-public-access", {"action": "store_const", "const": True, "help": "Open SSH to a compute instance"}),
    ("--ssh-public-key", {"metavar": "KEY|PATH", "help": "OpenSSH public key, or the path of a .pub file"}),
    ("--schedule", {"action": "append", "metavar": "start|stop=CRON[@TZ]",
                    "help": "Start or stop a compute instance on a schedule (repeatable), e.g. 'stop=0 18 * * 1-5@UTC'"}),
    ("--assigned-user", {"metavar": "OBJECT_ID:TENANT_ID", "help": "Create a compute instance on behalf of this user"}),
    ("--subnet", {"help": "Subnet resource id of a virtual network to join"}),
    ("--no-public-ip", {"action": "store_const", "const": True, "help": "No public IP address (unless the workspace has a managed virtual network, give --subnet too)"}),
    ("--application-sharing", {"choices": ["personal", "shared"], "help": "Who may use an instance's applications"}),
    ("--admin-username", {"help": "Administrator account on cluster nodes; the account Azure ML signs in with on an "
                                  "attached VM or HDInsight cluster"}),
    ("--remote-login-port-public-access", {"choices": ["true", "false"], "help": "Open the nodes' SSH port publicly"}),
    ("--identity", {"metavar": "system-assigned|RESOURCE_ID", "help": "Managed identity of a cluster"}),
    # Azure ML attached compute
    ("--namespace", {"help": "Kubernetes namespace Azure ML runs in on an attached cluster (default: default)"}),
    ("--instance-type", {"action": "append", "metavar": "NAME[:cpu=N,memory=M,gpu=G]",
                         "help": "Instance type of an attached Kubernetes cluster (repeatable; the first is the "
                                 "default), e.g. 'gpu-small:cpu=4,memory=16Gi,gpu=1'"}),
    ("--ssh-port", {"type": whole_number, "help": "SSH port of an attached VM or HDInsight cluster (default 22)"}),
]
KV_FIELDS = {"env": "env", "tag": "tags"}


def _schedules(values: list[str]) -> list[dict]:
    out = []
    for v in values:
        action, sep, rest = v.partition("=")
        if not sep or action not in ("start", "stop"):
            raise UsageError(f"--schedule takes start=CRON or stop=CRON, optionally @TIMEZONE; got {v!r}")
        cron, _, tz = rest.partition("@")
        out.append({"action": action, "cron": cron.strip(), **({"time_zone": tz.strip()} if tz else {})})
    return out


def _assigned_user(v: str) -> dict:
    oid, sep, tid = v.partition(":")
    if not sep:
        raise UsageError(f"--assigned-user takes OBJECT_ID:TENANT_ID, got {v!r}")
    return {"object_id": oid, "tenant_id": tid}


def _key_or_file(v: str) -> str:
    path = os.path.expanduser(v)
    if not v.startswith(("ssh-", "ecdsa-", "sk-")) and os.path.isfile(path):
        with open(path) as f:
            return f.read().strip()
    return v


def _instance_types(values: list[str]) -> dict:
    out: dict[str, dict] = {}
    for v in values:
        name, _, rest = v.partition(":")
        amounts: dict[str, str] = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in ("cpu", "memory", "gpu"):
                raise UsageError(f"--instance-type takes NAME or NAME:cpu=N,memory=M,gpu=G, got {v!r} "
                                 "(node selectors go in a -f spec file)")
            amounts[key.strip()] = value.strip()
        out[name.strip()] = {"requests": amounts, "limits": amounts} if amounts else {}
    return out


#: Options whose text becomes another shape of value: option field -> (spec field, converter).
CONVERT = {"instance_type": ("instance_types", _instance_types),
           "schedule": ("schedules", _schedules), "assigned_user": ("assigned_user", _assigned_user),
           "ssh_public_key": ("ssh_public_key", _key_or_file),
           "remote_login_port_public_access": ("remote_login_port_public_access", lambda v: v == "true")}
#: Secret spec fields, never taken on the command line in clear: (field, read-from-stdin flag, ask flag).
SECRET_OPTIONS: list[tuple[str, str, str]] = [
    ("password", "--password-stdin", "--ask-password"),
    ("token", "--token-stdin", "--ask-token"),
    ("admin_password", "--admin-password-stdin", "--ask-admin-password"),
    ("access_token", "--access-token-stdin", "--ask-access-token"),
]
#: Secret fields taken from the environment on create/attach, for kinds that have them, when no
#: option or spec file gave a secret.
SECRET_ENV = {"token": "JUPYTER_COMPUTE_TOKEN"}


class UsageError(Exception):
    """Bad usage found after parsing; exit code 2."""


def _field(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def _kv(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise UsageError(f"--{option} takes KEY=VALUE, got {v!r}")
        out[k] = val
    return out


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line, merged over those of ``-f spec.yaml``."""
    spec: dict[str, Any] = {}
    if getattr(args, "file", None):
        try:
            with open(args.file) as f:
                loaded = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"cannot read spec file {args.file}: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"spec file {args.file} must hold a mapping of field: value")
        spec.update(loaded)
    for option, _ in SPEC_OPTIONS:
        field = _field(option)
        value = getattr(args, field, None)
        if value is None:
            continue
        if field in KV_FIELDS:
            spec[KV_FIELDS[field]] = {**spec.get(KV_FIELDS[field], {}), **_kv(value, field)}
        elif field in CONVERT:
            name, convert = CONVERT[field]
            spec[name] = convert(value)
        else:
            spec[field] = value
    return spec


class ComputeParser(argparse.ArgumentParser):
    """argparse, with a usage error in a few lines: the command's short usage, the error, and where
    the whole help is (argparse's own usage of ``create`` lists every field of every kind)."""

    def short_usage(self) -> str:
        parts = [self.prog]
        for action in self._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:
                if not isinstance(action, argparse._SubParsersAction):
                    parts.append(action.metavar or action.dest.upper())
                else:
                    parts.append(action.metavar or "COMMAND")
            elif action.required:
                parts.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
        return " ".join(parts) + " [options]"

    def error(self, message: str):
        self.exit(2, f"usage: {self.short_usage()}\n{self.prog}: error: {message}\n"
                     f"see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):
        """Unknown arguments are the chosen command's error, with its usage, not the top level's."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            chosen = None
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction):
                    chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
            (chosen or self).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _spec_field(option: str) -> str:
    """The spec field an option of SPEC_OPTIONS sets."""
    field = _field(option)
    return KV_FIELDS.get(field) or CONVERT.get(field, (field,))[0]


def kind_help(prog: str, verb: str, kind: Any) -> str:
    """``create --kind K --help``: the options of kind K only, its required fields first.

    ``kind`` is the core's ``KindSpec``; fields without an option here go in a ``-f`` spec file."""
    model = kind.model()
    fields = model.model_fields if model is not None else {}
    p = argparse.ArgumentParser(prog=f"{prog} {verb}", add_help=False, usage=f"%(prog)s NAME --kind {kind.name} [options]",
                                description=f"{kind.description}", formatter_class=argparse.RawDescriptionHelpFormatter)
    required = p.add_argument_group(f"required fields of {kind.name}")
    optional = p.add_argument_group(f"other fields of {kind.name}")
    by_option = dict(SPEC_OPTIONS)
    shown = set()
    for option, kw in SPEC_OPTIONS:
        name = _spec_field(option)
        if name in fields and name not in shown:
            shown.add(name)
            group = required if fields[name].is_required() else optional
            group.add_argument(option, **{k: v for k, v in by_option[option].items() if k != "type"})
    for name, from_stdin, ask in SECRET_OPTIONS:
        if name in fields:
            group = required if fields[name].is_required() else optional
            group.add_argument(from_stdin, action="store_true", help=f"Read the {name} from the first line of stdin")
            group.add_argument(ask, action="store_true", help=f"Ask for the {name} on the terminal, without echo")
    rest = sorted(set(fields) - shown - {n for n, _, _ in SECRET_OPTIONS} - {"description", "tags"})
    common = p.add_argument_group("options of every kind")
    common.add_argument("--workspace", "-w", help="Workspace id (default: the configured or discovered one)")
    common.add_argument("--output", "-o", choices=["table", "json"], help="Output format")
    common.add_argument("--no-wait", action="store_true", help="Return once the operation has started")
    common.add_argument("-f", "--file", metavar="SPEC.yaml", help="YAML file of spec fields (options override it)"
                        + (f"; also for {', '.join(rest)}" if rest else ""))
    return p.format_help().rstrip()


def asked_kind_help(argv: list[str]) -> tuple[str, str, str | None] | None:
    """(verb, kind, workspace) when ``argv`` asks for one kind's help (``create --kind K --help``)."""
    if not argv or argv[0] not in ("create", "attach") or not {"-h", "--help"} & set(argv):
        return None
    found: dict[str, str] = {}
    for i, a in enumerate(argv):
        for key, names in (("kind", ("--kind", "-k")), ("ws", ("--workspace", "-w"))):
            if a in names and i + 1 < len(argv):
                found[key] = argv[i + 1]
            elif a.startswith(names[0] + "="):
                found[key] = a.split("=", 1)[1]
    return (argv[0], found["kind"], found.get("ws")) if "kind" in found else None


def build_parser(prog: str = "jupyter compute") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", "-w", help="Workspace id (default: the configured or discovered one, else 'local')")
    common.add_argument("--output", "-o", choices=["table", "json"], default="table", help="Output format")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--no-wait", action="store_true", help="Return once the operation has started")
    yes = argparse.ArgumentParser(add_help=False)
    yes.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation")
    spec = argparse.ArgumentParser(add_help=False)
    for option, kw in SPEC_OPTIONS:
        spec.add_argument(option, **kw)
    for field, from_stdin, ask in SECRET_OPTIONS:
        spec.add_argument(from_stdin, action="store_true", help=f"Read the {field} from the first line of stdin")
        spec.add_argument(ask, action="store_true", help=f"Ask for the {field} on the terminal, without echo")
        # Taken only to refuse it: a secret in argv ends up in shell history and the process list.
        spec.add_argument(f"--{field.replace('_', '-')}", dest=f"{field}_in_clear", help=argparse.SUPPRESS)
    specfile = argparse.ArgumentParser(add_help=False)
    specfile.add_argument("-f", "--file", metavar="SPEC.yaml", help="YAML file of spec fields (options override it)")

    p = ComputeParser(prog=prog, description="See and manage compute targets: this machine, local kernels, "
                                "clusters, remote machines and Azure Machine Learning compute.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help, parents=(), target=True, **kw):
        sp = sub.add_parser(name, help=help, description=help, parents=[common, *parents], **kw)
        if target:
            sp.add_argument("name", metavar="NAME", help="Target name")
        return sp

    add("list", "List targets with their state", target=False)
    add("show", "Show one target in full")
    sp = add("create", "Create a target (starts it when the kind runs on create)", [wait, spec, specfile])
    sp.add_argument("--kind", "-k", required=True, help="Kind of target; see 'jupyter compute kinds'")
    add("update", "Change fields of a target", [spec, specfile])
    sp = add("rename", "Give a stopped target another name (its kernel follows)")
    sp.add_argument("new_name", metavar="NEW_NAME", help="The target's new name")
    for verb in ("start", "stop", "restart"):
        add(verb, f"{verb.capitalize()} a target", [wait, yes] if verb != "start" else [wait])
    add("delete", "Delete a target (an attached one is detached)", [wait, yes])
    sp = add("attach", "Attach existing compute as a target", [wait, spec, specfile])
    sp.add_argument("--kind", "-k", required=True, help="Kind of target; see 'jupyter compute kinds'")
    sp.add_argument("--force", action="store_true", help="Attach even if the resource is attached under another name")
    add("detach", "Forget an attached target; the resource itself is left alone", [wait, yes])
    sp = add("wait", "Follow the operation running on a target to its end (one begun with --no-wait, or by "
                     "another process)")
    sp.add_argument("--timeout", type=whole_number, default=None, metavar="SECONDS",
                    help="Give up waiting after this many seconds (the operation goes on)")
    add("nodes", "List a target's nodes")
    add("sizes", "List sizes targets can have", target=False)
    add("usage", "Show quota use against limits", target=False)
    add("kinds", "List the kinds of target a workspace offers", target=False)
    sp = add("jobs", "List recent jobs (cells sent to Azure ML compute clusters), newest first", target=False)
    sp.add_argument("name", metavar="TARGET", nargs="?", help="Only the jobs of this target")
    sp.add_argument("--top", type=whole_number, default=20, help="How many jobs (default 20)")
    sp = add("job", "Show one job: status, Studio link and the end of its log", target=False)
    sp.add_argument("name", metavar="JOB", help="Job name")
    sp.add_argument("--lines", type=whole_number, default=200, help="Log lines to show (default 200)")
    sp.add_argument("--cancel", action="store_true",
                    help="Cancel the job, and follow the cancellation until the job has ended")

    wsp = sub.add_parser("workspace", help="List, add or remove Azure ML workspaces",
                         description="Workspaces: 'local', each Azure ML workspace added here or listed in "
                                     "c.AzureML.workspaces, and the one a config.json names (searched from the "
                                     "current folder upwards, as Workspace.from_config() does).")
    wsub = wsp.add_subparsers(dest="ws_command", metavar="ACTION", required=True)
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--output", "-o", choices=["table", "json"], default="table", help="Output format")
    wl = wsub.add_parser("list", help="List workspaces", parents=[out])
    wa = wsub.add_parser("add", help="Add an Azure ML workspace (nothing in Azure changes)", parents=[out])
    wa.add_argument("--subscription", required=True, help="Subscription id (a GUID)")
    wa.add_argument("--resource-group", required=True, help="Resource group of the workspace")
    wa.add_argument("--name", required=True, help="Workspace name")
    wa.add_argument("--alias", help="Id to address it by (default: its name)")
    wa.add_argument("--location", help="Azure region, e.g. westeurope (default: read from Azure)")
    wr = wsub.add_parser("remove", help="Forget an added workspace (nothing in Azure changes)", parents=[out])
    wr.add_argument("alias", metavar="ALIAS")
    for w in (wl, wa, wr):
        w.set_defaults(workspace=None)
    return p


# -- rendering --------------------------------------------------------------------------------------

def plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [plain(o) for o in obj]
    return obj


def _size(t: dict) -> str:
    s = t.get("size")
    if not s:
        return ""
    bits = [s["name"]]
    if s.get("vcpus"):
        bits.append(f"{s['vcpus']} vCPU")
    if s.get("memory_gb"):
        bits.append(f"{s['memory_gb']:g} GB")
    if s.get("gpus"):
        bits.append(f"{s['gpus']} GPU")
    return ", ".join(bits)


def _nodes(t: dict) -> str:
    n = t.get("nodes")
    if not n or n.get("current") is None:
        return ""
    return f"{n['current']}/{n['max']}" if n.get("max") is not None else str(n["current"])


def _until(ts: str | None) -> str:
    if not ts:
        return ""
    left = (datetime.fromisoformat(ts) - datetime.now(timezone.utc)).total_seconds()
    return f"{max(0, int(left // 60))} min"


def _schedule_when(s: dict) -> str:
    return s.get("when") or (f"cron {s['cron']}" if s.get("cron") else "")


def _schedules(t: dict) -> str:
    """A compute instance's start and stop schedules, in one cell of the list."""
    return "; ".join(f"{x.get('action')} {_schedule_when(x)} ({x.get('time_zone') or 'UTC'})"
                     + ("" if x.get("enabled", True) else " off")
                     for x in (t.get("properties") or {}).get("schedules") or [])


COLUMNS: dict[str, list[tuple[str, Callable[[dict], Any]]]] = {
    "targets": [("NAME", lambda t: t["name"]), ("KIND", lambda t: t["kind"]), ("STATE", lambda t: t["state"]),
                ("SIZE", _size), ("NODES", _nodes), ("IDLE SHUTDOWN", lambda t: _until(t.get("idle_shutdown_at"))),
                ("SCHEDULES", _schedules)],
    "nodes": [("ID", lambda n: n["id"]), ("STATE", lambda n: n["state"]), ("ADDRESS", lambda n: n.get("address") or ""),
              ("PORT", lambda n: n.get("port") or "")],
    "sizes": [("NAME", lambda s: s["name"]), ("VCPUS", lambda s: s.get("vcpus") or ""),
              ("MEMORY GB", lambda s: s.get("memory_gb") or ""), ("GPUS", lambda s: s.get("gpus") or 0),
              ("PRICE/H", lambda s: s.get("price_per_hour") or "")],
    "usage": [("NAME", lambda u: u["name"]), ("CURRENT", lambda u: u["current"]),
              ("LIMIT", lambda u: "" if u.get("limit") is None else u["limit"]), ("UNIT", lambda u: u["unit"])],
    "workspaces": [("ID", lambda w: w["id"] + (" (default)" if w.get("default") else "")),
                   ("KIND", lambda w: w["kind"]), ("DESCRIPTION", lambda w: w["description"])],
    "jobs": [("NAME", lambda j: j["name"]), ("STATUS", lambda j: j.get("status") or ""),
             ("COMPUTE", lambda j: j.get("compute") or ""), ("CREATED", lambda j: _ago(j.get("age_seconds"))),
             ("DURATION", lambda j: _duration(j.get("duration_seconds"))),
             ("CREATED BY", lambda j: j.get("created_by") or ""), ("STUDIO", lambda j: j.get("studio_url") or "")],
    "schedules": [("ACTION", lambda x: x.get("action") or ""), ("WHEN", _schedule_when),
                  ("TIME ZONE", lambda x: x.get("time_zone") or "UTC"),
                  ("ENABLED", lambda x: "yes" if x.get("enabled", True) else "no")],
    "kinds": [("KIND", lambda k: k["name"]), ("FAMILY", lambda k: k["family"]),
              ("OPERATIONS", lambda k: ", ".join(k["operations"])), ("DESCRIPTION", lambda k: k["description"])],
}


def _duration(seconds: float | None) -> str:
    """A length of time as people read it: '45s', '3m 12s', '2h 05m', '3d 4h'."""
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def _ago(seconds: float | None) -> str:
    """How long ago: 'just now', '5 min ago', '2 h ago', '3 d ago'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return ""



def rows(kind: str, items: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = COLUMNS[kind]
    return [c for c, _ in cols], [[str(fn(i)) for _, fn in cols] for i in items]


def text_table(kind: str, items: list[dict]) -> str:
    header, body = rows(kind, items)
    if not body:
        return f"(no {kind})"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *body])


def text_detail(t: dict) -> str:
    """A target as ``key: value`` lines, nested values indented beneath their key (YAML-like)."""
    shown = {**t, "size": _size(t), "nodes": _nodes(t)}
    lines: list[str] = []
    for k, v in shown.items():
        if k not in ("properties", "errors") and v not in (None, [], {}, ""):
            lines += _detail_lines(k, v, 0)
    props = {k: v for k, v in (t.get("properties") or {}).items() if v not in (None, [], {}, "")}
    schedules = props.pop("schedules", None)
    if props:
        lines.append("properties:")
        for k, v in props.items():
            lines += _detail_lines(k, v, 1)
    if schedules:
        lines.append("schedules:")
        lines += ["  " + line for line in text_table("schedules", schedules).splitlines()]
    if t.get("errors"):
        lines.append("errors:")
        lines += [f"  - {e.get('message')}" for e in t["errors"]]
    return "\n".join(lines)


def _detail_lines(key: str, value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        out = [f"{pad}{key}:"]
        for k, v in value.items():
            out += _detail_lines(str(k), v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return [f"{pad}{key}: {', '.join(str(v) for v in value)}"]
        out = [f"{pad}{key}:"]
        for v in value:
            if isinstance(v, dict):
                inner = [line.strip() for k, x in v.items() for line in _detail_lines(str(k), x, 0)]
                out.append(f"{pad}  - " + ", ".join(inner))
            else:
                out.append(f"{pad}  - {v}")
        return out
    return [f"{pad}{key}: {value}"]


def text_job(j: dict) -> str:
    readable = {"duration_seconds": ("duration", _duration), "age_seconds": ("created", _ago)}
    lines = []
    for k, v in j.items():
        if k in ("log", "log_error", "error", "command", "note") or v in (None, "", []):
            continue
        label, show = readable.get(k, (k, str))
        lines.append(f"{label}: {show(v)}")
    if j.get("error"):
        lines.append(f"error: {j['error'].get('message')}")
    if j.get("note"):
        lines.append(f"cancel: {j['note']}")
    if j.get("log"):
        lines += ["", "--- log ---", j["log"].rstrip()]
    elif j.get("log_error"):
        lines.append(f"log not available: {j['log_error']}")
    return "\n".join(lines)


class OperationAborted(Exception):
    pass


def read_secrets(args: argparse.Namespace, ui, spec: dict[str, Any]) -> None:
    """Add the secrets asked for by --*-stdin / --ask-* to ``spec``; refuse one given in clear."""
    for field, from_stdin, ask in SECRET_OPTIONS:
        if getattr(args, f"{field}_in_clear", None) is not None:
            raise UsageError(f"--{field.replace('_', '-')} would leave the {field} in your shell history and the "
                             f"process list; use {from_stdin} or {ask}")
        if getattr(args, _field(from_stdin), False):
            how = "stdin"
        elif getattr(args, _field(ask), False):
            how = "ask"
        else:
            continue
        reader = getattr(ui, "read_secret", None)
        if reader is None:
            raise UsageError(f"{from_stdin} and {ask} need a terminal; give the {field} through the REST API or "
                             "a -f spec file instead")
        spec[field] = reader(field, how, from_stdin if how == "ask" else ask)


def _schema_properties(ws, kind: str) -> dict[str, Any]:
    info = next((k for k in ws.kinds() if k.name == kind), None)
    return ((info.attach_schema or info.create_schema or {}) if info else {}).get("properties", {})


#: Options that name a file; where the kind's field is a secret (the key itself, sent on to Azure),
#: the field gets the file's text.
SECRET_FILES = {"ssh_private_key": "--ssh-private-key"}


def secret_files(spec: dict[str, Any], ws, kind: str) -> None:
    props = _schema_properties(ws, kind)
    for field, option in SECRET_FILES.items():
        value = spec.get(field)
        if not isinstance(value, str) or not props.get(field, {}).get("writeOnly") or "-----BEGIN" in value:
            continue
        try:
            with open(os.path.expanduser(value)) as f:
                spec[field] = f.read()
        except OSError as e:
            raise UsageError(f"{option}: cannot read {value}: {e.strerror}") from None


def secrets_from_env(spec: dict[str, Any], ws, kind: str) -> None:
    props = _schema_properties(ws, kind)
    if any(spec.get(f) for f, p in props.items() if p.get("writeOnly")):
        return
    for field, var in SECRET_ENV.items():
        if field in props and os.environ.get(var):
            spec[field] = os.environ[var]


async def run(args: argparse.Namespace, compute, ui) -> int:
    """Carry out one parsed command against the core; returns the exit code."""
    try:
        return await _run(args, compute, ui)
    finally:
        if args.command not in ("kinds", "sizes", "usage", "job", "jobs"):
            # What was created, deleted or learned about targets shows in every Jupyter client's kernels.
            compute.kernelspecs_changed()


async def _run(args: argparse.Namespace, compute, ui) -> int:
    cmd = args.command
    if cmd == "workspace":
        return await run_workspace(args, compute, ui)
    ws = await compute.resolve(args.workspace)
    if cmd not in ("sizes", "usage", "kinds"):
        await compute.end_orphans()
        await ws.reconcile()
        # Operations whose process exited (--no-wait): what their service has finished shows as finished.
        await ws.catch_up()
    if cmd == "list":
        ui.show("targets", await ws.list())
        return 0
    if cmd == "wait":
        return await _wait(ws, args, ui)
    if cmd == "show":
        ui.show("target", await ws.get(args.name))
        return 0
    if cmd == "nodes":
        ui.show("nodes", await ws.nodes(args.name))
        return 0
    if cmd == "jobs":
        ui.show("jobs", await ws.jobs(args.name, top=args.top))
        return 0
    if cmd == "job":
        if args.cancel:
            def progress(status: str) -> None:  # shown as an operation's step is
                ui.progress(SimpleNamespace(action="cancel", target=args.name, progress=status))
            ui.show("job", await ws.cancel_job(args.name, progress=progress))
            return 0
        ui.show("job", await ws.job(args.name, log_lines=args.lines))
        return 0
    if cmd in ("sizes", "usage"):
        ui.show(cmd, await getattr(ws, cmd)())
        return 0
    if cmd == "kinds":
        ui.show("kinds", ws.kinds())
        return 0
    if cmd == "rename":
        ui.show("target", await ws.rename(args.name, args.new_name))
        return 0
    if cmd == "update":
        changes = spec_from_args(args)
        read_secrets(args, ui, changes)
        if not changes:
            raise UsageError("give at least one option to change; see --help")
        ui.show("target", await ws.update(args.name, changes))
        return 0
    wait = not getattr(args, "no_wait", False)
    kw = {"wait": wait, "on_progress": ui.progress}
    if cmd in ("create", "attach"):
        spec = spec_from_args(args)
        read_secrets(args, ui, spec)
        secrets_from_env(spec, ws, args.kind)
        secret_files(spec, ws, args.kind)
        if cmd == "create":
            op = await ws.create(args.name, args.kind, spec, **kw)
        else:
            op = await ws.attach(args.name, args.kind, spec, force=args.force, **kw)
    elif cmd in ("delete", "detach"):
        await _refuse_self_stop(ws, args)
        target = await ws.get(args.name)
        if not args.yes:
            what = ("Detach" if cmd == "detach" or not target.managed else "Delete")
            note = " The resource itself is left alone." if what == "Detach" else ""
            ui.confirm(f"{what} '{args.name}' ({target.kind}) in workspace '{ws.id}'?{note}", "--yes")
        op = await getattr(ws, cmd)(args.name, confirm=args.yes, **kw)
    elif cmd in ("stop", "restart"):
        await _refuse_self_stop(ws, args)
        if not args.yes:
            question = loses_variables(cmd, await ws.get(args.name), ws)
            if question:
                ui.confirm(question, "--yes")
        op = await getattr(ws, cmd)(args.name, confirm=args.yes, **kw)
    else:
        op = await getattr(ws, cmd)(args.name, **kw)
    if not wait:
        ui.show("operation", op)
        return 0
    if op.status.value == "failed":
        ui.show("operation", op)
        return 1
    if cmd in ("delete", "detach"):
        ui.show("operation", op)
    else:
        ui.show("target", await ws.get(args.name))
    return 0


def loses_variables(action: str, target: Any, ws: Any) -> str | None:
    """The one rule of every face: a stop or restart that would lose a running kernel's variables
    is asked first. The question to ask, or None when there is nothing to lose."""
    if action in ("stop", "restart") and target.state == "running" and ws.kind_spec(target.kind).keeps_variables:
        return f"{action.capitalize()} '{target.name}' ({target.kind})? The variables in its kernel are lost."
    return None


async def _wait(ws, args: argparse.Namespace, ui) -> int:
    """Follow the operation running on a target, whichever process began it, to its end."""
    op = await ws.running_operation(args.name)
    if op is None:
        ui.show("target", await ws.get(args.name))
        return 0
    op = await ws.wait_operation(op.id, ui.progress, timeout=args.timeout)
    ui.show("operation", op)
    if op.status.value == "running":
        return 1
    return 1 if op.status.value == "failed" else 0


def operation_text(op: dict, prog: str = "jupyter compute") -> str:
    """One operation in words; a running one says how to follow it."""
    err = op.get("error")
    text = f"{op['action']} {op['target']}: {op['status']}" + (f": {err['message']}" if err else "")
    if op["status"] == "running":
        text += (f" (operation {op['id']}); follow it with `{prog} wait {op['target']}`, or see it with "
                 f"`{prog} show {op['target']}`")
    return text


async def _refuse_self_stop(ws, args: argparse.Namespace) -> None:
    """Stopping the machine this runs on needs --yes, asked or not: the answer ends the session."""
    if not args.yes:
        why = await ws.consequence(args.name, args.command)
        if why:
            raise UsageError(f"{why} Refusing without --yes.")


async def run_workspace(args: argparse.Namespace, compute, ui) -> int:
    if args.ws_command == "add":
        await compute.add_workspace(subscription_id=args.subscription, resource_group=args.resource_group,
                                    workspace_name=args.name, alias=args.alias, location=args.location)
    elif args.ws_command == "remove":
        await compute.remove_workspace(args.alias)
    else:
        await compute.refresh_workspaces()
    ui.show("workspaces", compute.workspaces())
    return 0


