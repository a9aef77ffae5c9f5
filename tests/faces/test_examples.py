"""The examples run top to bottom, as a new user runs them, so they never rot."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.support import text_of

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
