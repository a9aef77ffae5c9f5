"""Twenty notebooks at once, each routing its cells to a local-kernel target of its own, beside one
notebook alone: a ``%%compute`` cell's round trip in each (``routed_notebooks_rtt_ms`` and
``routed_notebook_rtt_ms``). The peer is the same twenty notebooks running plain cells at once
(``native_notebooks_rtt_ms``): what two cores give twenty busy kernels whatever the route does.
The three are taken in turn, round after round."""
from __future__ import annotations

import threading

from .common import Recorder
from .notebook import Frontend, Session

NOTEBOOKS = 20
ROUNDS = 5
#: Cells one notebook alone sends in a round, and cells each of the twenty sends in a round.
ALONE = 40
TOGETHER = 10


def _cell(i: int) -> str:
    return f"%%compute nb-{i:02d}\npass"


def _plain(i: int) -> str:
    return "pass"


def _all_at_once(frontends: list[Frontend], cell=_cell) -> list[float]:
    """Every notebook sends its cells at the same moment; each cell's round trip, in ms."""
    samples: list[list[float]] = [[] for _ in frontends]
    errors: list[BaseException] = []
    start = threading.Barrier(len(frontends))

    def drive(i: int) -> None:
        try:
            start.wait(timeout=60)
            for _ in range(TOGETHER):
                samples[i].append(frontends[i].execute(cell(i), timeout=120).ms)
        except BaseException as e:  # seen by the section, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=drive, args=(i,), name=f"notebook-{i}") for i in range(len(frontends))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [ms for one in samples for ms in one]


def run(rec: Recorder) -> None:
    with Session("notebooks") as s:
        frontends = []
        for i in range(NOTEBOOKS):
            s.create(f"nb-{i:02d}", "local-kernel")
            frontends.append(s.notebook())
        for i, fe in enumerate(frontends):  # each opens its route once, as a notebook's first cell does
            fe.run(_cell(i))
        alone: list[float] = []
        together: list[float] = []
        plain: list[float] = []
        for _ in range(ROUNDS):
            alone.extend(frontends[0].execute(_cell(0)).ms for _ in range(ALONE))
            together.extend(_all_at_once(frontends))
            plain.extend(_all_at_once(frontends, _plain))
        rec.add("routed_notebook_rtt_ms", alone, "ms")
        rec.add("routed_notebooks_rtt_ms", together, "ms")
        rec.add("native_notebooks_rtt_ms", plain, "ms")
