"""The examples run top to bottom, as a new user runs them, so they never rot."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.support import free_port, text_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_getting_started_notebook_runs_top_to_bottom(tmp_path, compute_db):
    nb = nbformat.read(EXAMPLES / "getting-started.ipynb", as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for c in cells:
        assert not [o for o in c.outputs if o.output_type == "error"], (c.source, c.outputs)
        # Nothing that went well is painted as an error.
        assert not [o for o in c.outputs if o.output_type == "stream" and o.name == "stderr"], (c.source, c.outputs)
    by_source = {c.source.splitlines()[0]: text_of(c) for c in cells}
    assert "hello from process" in by_source["%%compute analysis --push numbers --pull total,there -v"]
    assert "pushed numbers" in by_source["%%compute analysis --push numbers --pull total,there -v"]
    assert "the sum came back: 499,999,500,000" in by_source["assert total == sum(range(1_000_000)) and there != here"]
    assert "a notebook kernel on the target, with hello" in by_source["from jupyter_client.manager import start_new_kernel"]
    ranks = by_source["%%compute cluster --nodes 2 --push numbers --pull part"]
    assert "rank 0 of 2" in ranks and "rank 1 of 2" in ranks
    # Cleaned up: what the notebook created is gone.
    final = text_of(cells[-1])
    assert "analysis" not in final and "cluster" not in final and "this-machine" in final


def test_jupyter_compute_works_in_a_terminal_of_make_lab(tmp_path, compute_db):
    """``make lab`` as a user runs it, from a shell whose PATH does not hold the venv: its last line is
    the address with the token, and a terminal opened in that JupyterLab runs ``jupyter compute``."""
    import asyncio
    import json
    import os
    import re
    import signal
    import subprocess
    import time

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    root = EXAMPLES.parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "JUPYTER_TOKEN")}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(tmp_path), JUPYTER_COMPUTE_DB=str(compute_db),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    lab = subprocess.Popen(["make", "-s", "lab", f"PORT={port}"], cwd=root, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        lines = []
        while url is None and time.monotonic() < deadline:
            line = lab.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", line)
            if m:
                url, token = m.group(0), m.group(1)
        assert url, "".join(lines)
        base = f"http://127.0.0.1:{port}"

        async def in_a_terminal() -> str:
            http = AsyncHTTPClient()
            headers = {"Authorization": f"token {token}"}
            for _ in range(200):  # the address is printed before the server listens
                try:
                    r = await http.fetch(f"{base}/api/terminals", method="POST", body="{}", headers=headers)
                    break
                except (ConnectionRefusedError, OSError):
                    await asyncio.sleep(0.1)
            name = json.loads(r.body)["name"]
            ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/terminals/websocket/{name}",
                                                     headers=headers))
            try:
                await ws.write_message(json.dumps(["stdin", "command -v jupyter; jupyter compute list\r"]))
                seen = ""
                end = time.monotonic() + 60
                while "this-machine" not in seen and time.monotonic() < end:
                    msg = await asyncio.wait_for(ws.read_message(), max(0.1, end - time.monotonic()))
                    if msg is None:
                        break
                    kind, *rest = json.loads(msg)
                    if kind == "stdout":
                        seen += rest[0]
                return seen
            finally:
                ws.close()
                await http.fetch(f"{base}/api/terminals/{name}", method="DELETE", headers=headers)

        seen = asyncio.run(in_a_terminal())
        assert str(root / ".venv" / "bin" / "jupyter") in seen, seen
        assert re.search(r"this-machine\s+local\s+running", seen), seen
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
