"""What the notebook faces' tests share: an IPython shell with the extension loaded, IPython's own
files kept apart from the user's, and local-kernel targets made through the command line."""
from __future__ import annotations

import json
import os

import pytest

from tests.support import cli


def create_target(name: str = "k1", *options: str) -> dict:
    """Create a local-kernel target through the command line and return it, running."""
    r = cli("create", name, "--kind", "local-kernel", "--output", "json", *options)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["state"] == "running", t
    return t


@pytest.fixture(scope="session", autouse=True)
def _ipython_dir(tmp_path_factory):
    """IPython's history and profile of the tests' own, not the user's."""
    old = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    yield
    if old is None:
        os.environ.pop("IPYTHONDIR", None)
    else:
        os.environ["IPYTHONDIR"] = old


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "jupyter_compute")
    yield sh
    sh.run_line_magic("unload_ext", "jupyter_compute")
