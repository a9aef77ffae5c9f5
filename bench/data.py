"""Moving data: a 100 MB numpy array pushed then pulled (200 MB counted) through ``%%compute
--push/--pull``, ipyparallel's push/pull, Dask's scatter/gather, and a raw loopback TCP copy; and a
plain Python list of a million numbers pushed then pulled through ``%%compute`` on a Dask cluster,
beside ipyparallel moving the same list."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

from .common import MB, Recorder
from .notebook import Session
from .peers import plain_dask, start_ipp

SIZE = 100 * MB
MOVED = 2 * SIZE
ROUNDS = 5


# The far end of the loopback copy: another process, so the two ends never share a GIL.
ECHO = """
import socket, sys
n = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        got += s.recv_into(view[got:])
    s.sendall(buf)
"""


def loopback_copy(nbytes: int) -> float:
    """Seconds to send ``nbytes`` over loopback TCP to another process and receive them back."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        echo = subprocess.Popen([sys.executable, "-c", ECHO, str(nbytes), str(listener.getsockname()[1])])
        try:
            conn, _ = listener.accept()
            # Made after the echo is forked: buffers that existed at the fork would be copy-on-write.
            data = bytearray(nbytes)
            back = bytearray(nbytes)
            with conn:
                t0 = time.perf_counter()
                conn.sendall(data)
                view, got = memoryview(back), 0
                while got < nbytes:
                    n = conn.recv_into(view[got:])
                    if not n:
                        raise ConnectionError("the echo closed early")
                    got += n
                dt = time.perf_counter() - t0
        finally:
            try:
                echo.wait(timeout=10)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait()
    return dt


#: The list's length: a million numbers, as the getting-started notebook pushes.
LIST_LENGTH = 1_000_000


def run(rec: Recorder) -> None:
    with Session("data") as s:
        nb = s.notebook()
        s.create("bench-k", "local-kernel")
        s.create("bench-dl", "dask-cluster", "--min-nodes", "1", "--max-nodes", "1", "--threads-per-node", "1")
        start_ipp(s, nb)
        plain_dask(s, nb)
        nb.run(f"import numpy as np\na = np.random.default_rng(0).random({SIZE // 8})\n_orig = a.copy()\n"
               f"numbers = list(range({LIST_LENGTH}))\n_orig_numbers = list(numbers)")
        list_cells = {
            "dask_route_list_push_pull_s": "%%compute bench-dl --push numbers --pull numbers\npass",
            "ipp_list_push_pull_s": "_ipp.push({'numbers': numbers}, block=True)\n"
                                    "numbers = _ipp.pull('numbers', block=True)",
        }
        cells = {
            "push_pull_mb_s": "%%compute bench-k --push a --pull a\npass",
            "ipp_push_pull_mb_s": "_ipp.push({'a': a}, block=True)\na = _ipp.pull('a', block=True)",
            # hash=False: no hashing of 100 MB first, Dask's fastest way in.
            "dask_scatter_gather_mb_s": "_f = _plain.scatter(a, hash=False)\na = _plain.gather(_f)\ndel _f",
        }
        rates: dict[str, list[float]] = {k: [] for k in cells}
        rates["loopback_tcp_mb_s"] = []
        list_seconds: dict[str, list[float]] = {k: [] for k in list_cells}
        for i in range(1 + ROUNDS):
            for key, code in cells.items():
                seconds = nb.execute(code, timeout=300).seconds
                if i:
                    rates[key].append(MOVED / MB / seconds)
            for key, code in list_cells.items():
                seconds = nb.execute(code, timeout=300).seconds
                if i:
                    list_seconds[key].append(seconds)
            seconds = loopback_copy(SIZE)
            if i:
                rates["loopback_tcp_mb_s"].append(MOVED / MB / seconds)
        # What came back is what went out.
        nb.run("assert np.array_equal(a, _orig), 'the array changed on the way'\n"
               "assert numbers == _orig_numbers, 'the list changed on the way'")
        for key, xs in rates.items():
            rec.add(key, xs, "MB/s")
        for key, xs in list_seconds.items():
            rec.add(key, xs, "s")
