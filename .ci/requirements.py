"""Prints the project's requirements, with the extras named on the command line, one per line.

Setup installs these while the frontend builds, then installs the project itself without its
dependencies: the editable install needs the built extension, and the build needs nothing pip
installs. The metadata comes from hatchling, so pyproject.toml stays the one list.

    python .ci/requirements.py test bench
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def requirements(metadata: dict, extras: list[str]) -> list[str]:
    """The project's dependencies and those of the given extras, an extra that names the project
    itself (`jupyter_compute[test]`) replaced by what that extra lists."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    own = canonicalize_name(metadata["name"])
    optional = metadata.get("optional-dependencies", {})
    out: list[str] = []
    pending: list[str | None] = [None, *extras]
    seen: set[str | None] = set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra is not None and extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra named {extra!r}")
        for line in metadata.get("dependencies", []) if extra is None else optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == own:
                pending.extend(sorted(req.extras))
            elif line not in out:
                out.append(line)
    return out


def main(argv: list[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    hatchling = Path(sys.executable).with_name("hatchling")
    metadata = json.loads(
        subprocess.run([str(hatchling), "metadata", "-c"], cwd=root, check=True,
                       capture_output=True, text=True).stdout)
    print("\n".join(requirements(metadata, argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
