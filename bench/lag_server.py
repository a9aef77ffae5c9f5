"""``python -m bench.lag_server [jupyter server options]``: a Jupyter server whose own event loop
carries a 10 ms periodic probe. ``GET /bench/lag`` answers the lateness (ms) of every tick since
the previous call, so a bench can read the loop's lag over a window from inside the server."""
from __future__ import annotations

import asyncio
import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from tornado import web

INTERVAL = 0.010
_lags: list[float] = []


class LagHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        out = _lags[:]
        del _lags[:]
        self.finish(json.dumps(out))


def _probe() -> None:
    loop = asyncio.get_running_loop()

    def tick(due: float) -> None:
        now = loop.time()
        _lags.append((now - due) * 1000)
        loop.call_at(now + INTERVAL, tick, now + INTERVAL)
    loop.call_at(loop.time() + INTERVAL, tick, loop.time() + INTERVAL)


class LagServerApp(ServerApp):
    def init_webapp(self) -> None:
        super().init_webapp()
        self.web_app.add_handlers(".*$", [(url_path_join(self.base_url, "bench", "lag"), LagHandler)])

    def start_ioloop(self) -> None:
        self.io_loop.add_callback(_probe)
        super().start_ioloop()


if __name__ == "__main__":
    LagServerApp.launch_instance()
