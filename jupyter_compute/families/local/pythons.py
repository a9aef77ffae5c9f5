"""The Python environments on this machine a local kernel could run in, to offer in the create form:
conda environments, virtual environments in the usual places, and the interpreters of the
kernelspecs already installed. Finding is reading folders and asking conda; nothing is run in the
environments themselves. Call ``find_pythons`` off the event loop.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from typing import Any

#: Folders that hold one environment per subfolder, relative to the home folder.
ENV_PARENTS = (".venvs", ".virtualenvs", "venvs", "envs", ".local/share/virtualenvs", ".pyenv/versions",
               "miniconda3/envs", "anaconda3/envs", "miniforge3/envs", "mambaforge/envs", "micromamba/envs")
#: Environments that live in a project folder, relative to the server's working folder.
PROJECT_ENVS = (".venv", "venv", "env")
CONDA_TIMEOUT = 15.0


def _interpreter(env: str) -> str | None:
    for rel in ("bin/python", "bin/python3", "python.exe", "Scripts/python.exe"):
        exe = os.path.join(env, rel)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return None


def _is_env(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, marker)) for marker in ("pyvenv.cfg", "conda-meta")) or (
        _interpreter(path) is not None)


def _shown(path: str, home: str) -> str:
    return "~" + path[len(home):] if home and (path == home or path.startswith(home + os.sep)) else path


def _conda_envs() -> list[str]:
    conda = os.environ.get("CONDA_EXE") or shutil.which("conda") or shutil.which("mamba")
    if not conda:
        return []
    try:
        out = subprocess.run([conda, "env", "list", "--json"], capture_output=True, text=True,
                             timeout=CONDA_TIMEOUT, stdin=subprocess.DEVNULL)
        return [str(e) for e in json.loads(out.stdout or "{}").get("envs", [])]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def _kernelspec_interpreters() -> list[tuple[str, str]]:
    """(interpreter, display name) of the installed kernelspecs that name a Python, ours excepted."""
    from jupyter_client.kernelspec import KernelSpecManager

    from ...core.kernels import PREFIX

    out = []
    try:
        specs = KernelSpecManager().get_all_specs()
    except Exception:
        return []
    for name, entry in sorted(specs.items()):
        spec = entry.get("spec") or {}
        argv = spec.get("argv") or []
        if name.startswith(PREFIX) or not argv or spec.get("language", "python").lower() != "python":
            continue
        exe = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        if exe and os.path.isfile(exe):
            out.append((exe, spec.get("display_name") or name))
    return out


def find_pythons(home: str | None = None, cwd: str | None = None) -> list[dict[str, Any]]:
    """Each environment once, by the interpreter path a local kernel's ``python`` field takes:
    ``{"path", "label", "source"}``, this Python first."""
    home = os.path.expanduser("~") if home is None else home
    cwd = os.getcwd() if cwd is None else cwd
    found: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(exe: str | None, label: str, source: str) -> None:
        if exe and os.path.abspath(exe) not in seen:
            seen.add(os.path.abspath(exe))
            found.append({"path": os.path.abspath(exe), "label": label, "source": source})

    add(sys.executable, f"this server's Python ({_shown(sys.prefix, home)})", "this")
    for env in _conda_envs():
        add(_interpreter(env), f"conda {os.path.basename(env) or env} ({_shown(env, home)})", "conda")
    for parent in ENV_PARENTS:
        for env in sorted(glob.glob(os.path.join(glob.escape(os.path.join(home, parent)), "*"))):
            if os.path.isdir(env) and _is_env(env):
                add(_interpreter(env), f"{_shown(env, home)}", "venv")
    for rel in PROJECT_ENVS:
        env = os.path.join(cwd, rel)
        if os.path.isdir(env) and _is_env(env):
            add(_interpreter(env), f"{_shown(env, home)}", "venv")
    for exe, display in _kernelspec_interpreters():
        add(exe, f"{display} ({_shown(exe, home)})", "kernelspec")
    return found
