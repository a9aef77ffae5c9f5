"""The Compute sidebar with 1,000 targets, in headless Chromium against a real ``jupyter lab``: time
from opening the panel to a first screen of rows, time to scroll to the last row, and the JS heap."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from jupyter_compute.core.store import Store
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LabServer

from .common import MB, Recorder

TARGETS = 1000
PAGES = 5
SCROLLS = 4
LAST = f"bench-{TARGETS - 1:04d}"

# Timed inside the page, from running the command until the frame after the list's view is
# filled with rows (the first target among them).
OPEN = """async () => {
  const t0 = performance.now();
  const done = new Promise((resolve) => {
    const check = () => {
      const list = document.querySelector('#jupyter-compute-panel .jp-ComputeList');
      if (list && list.clientHeight > 0 && list.querySelector(".jp-ComputeRow[data-name='bench-0000']")) {
        const bottom = list.getBoundingClientRect().bottom;
        let filled = 0;
        for (const row of list.querySelectorAll('.jp-ComputeRow')) {
          filled = Math.max(filled, row.getBoundingClientRect().bottom);
        }
        if (filled >= bottom) {
          requestAnimationFrame(() => resolve(performance.now() - t0));
          return;
        }
      }
      requestAnimationFrame(check);
    };
    check();
  });
  await window.jupyterapp.commands.execute('jupyter-compute:open');
  return await done;
}"""

# Scroll to the end of the list; timed until the frame after the row NAME is rendered inside the view.
SCROLL = """async ([name, top]) => {
  const list = document.querySelector('#jupyter-compute-panel .jp-ComputeList');
  const t0 = performance.now();
  list.scrollTop = top ? 0 : list.scrollHeight;
  return await new Promise((resolve, reject) => {
    const check = () => {
      const row = list.querySelector(`.jp-ComputeRow[data-name='${name}']`);
      if (row) {
        const r = row.getBoundingClientRect(), v = list.getBoundingClientRect();
        if (r.top >= v.top - 1 && r.bottom <= v.bottom + 1) {
          requestAnimationFrame(() => resolve(performance.now() - t0));
          return;
        }
      }
      if (performance.now() - t0 > 10000) { reject(new Error(`${name} never showed`)); return; }
      requestAnimationFrame(check);
    };
    check();
  });
}"""


def _populate(db: Path) -> None:
    store = Store(str(db))
    try:
        for i in range(TARGETS):
            store.insert_target("local", f"bench-{i:04d}", "local-kernel", True,
                                {"memory_limit_mb": 1024, "description": f"target {i}"}, "stopped")
    finally:
        store.close()


def run(rec: Recorder) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    tmp = Path(tempfile.mkdtemp(prefix="jc-bench-sidebar-"))
    lab = LabServer(tmp)
    _populate(lab.db)
    opens, scrolls, heaps = [], [], []
    pw = browser = None
    try:
        lab.start()
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(1 + PAGES):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            try:
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{lab.url}/lab/workspaces/bench-{i}?token={lab.token}")
                page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started")
                page.evaluate("async () => { await window.jupyterapp.restored; }")
                page.wait_for_selector("#jupyter-compute-panel", state="attached")
                if page.locator("#jupyter-compute-panel").is_visible():
                    raise AssertionError("the Compute panel was open before it was opened")
                opened = page.evaluate(OPEN)
                shown = [page.evaluate(SCROLL, [LAST, False]) for _ in range(SCROLLS)
                         if page.evaluate(SCROLL, ["bench-0000", True]) is not None]
                cdp = context.new_cdp_session(page)
                cdp.send("HeapProfiler.collectGarbage")
                heap = cdp.send("Runtime.getHeapUsage")["usedSize"] / MB
                if i:  # the first page warms the server and the browser's caches
                    opens.append(opened)
                    scrolls.extend(shown)
                    heaps.append(heap)
            finally:
                context.close()
        rec.add("sidebar_1000_ms", opens, "ms")
        rec.add("sidebar_scroll_end_ms", scrolls, "ms")
        rec.add("sidebar_1000_heap_mb", heaps, "MB")
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        # The thousand are stopped rows with no process behind them: out of the store at once,
        # rather than one DELETE each.
        store = Store(str(lab.db))
        try:
            for i in range(TARGETS):
                store.delete_target("local", f"bench-{i:04d}")
        finally:
            store.close()
        lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)
