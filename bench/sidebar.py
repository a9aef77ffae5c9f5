"""The Compute sidebar with 1,000 targets, in headless Chromium against a real ``jupyter lab``: time
from opening the panel to a first screen of rows, time to scroll to the last row, and the JS heap;
and how the first screen's time and the heap grow with 100 and 10,000 targets."""
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
#: The other store sizes, each in a JupyterLab of its own, with fewer pages.
GROWTH = (100, 10_000)
GROWTH_PAGES = 3

# Timed inside the page, from running the command until the frame after the list's view is
# filled with rows (the first target among them).
OPEN = """async () => {
  const t0 = performance.now();
  const done = new Promise((resolve) => {
    const check = () => {
      const list = document.querySelector('#jupyter-compute-panel .jp-ComputeList');
      if (list && list.clientHeight > 0 && list.querySelector(".jp-ComputeRow[data-name='bench-00000']")) {
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


def _populate(db: Path, n: int) -> None:
    store = Store(str(db))
    try:
        for i in range(n):
            store.insert_target("local", f"bench-{i:05d}", "local-kernel", True,
                                {"memory_limit_mb": 1024, "description": f"target {i}"}, "stopped")
    finally:
        store.close()


def _pages(browser, n: int, pages: int, scrolls: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Open the panel on ``pages`` fresh pages of a JupyterLab whose store holds ``n`` targets (one
    more first, to warm the server and the browser's caches); the open times, scroll times, heaps,
    and how many times each page read the kernelspecs by the time its panel was open."""
    tmp = Path(tempfile.mkdtemp(prefix=f"jc-bench-sidebar-{n}-"))
    lab = LabServer(tmp)
    _populate(lab.db, n)
    last = f"bench-{n - 1:05d}"
    opens, scrolls_ms, heaps, spec_reads = [], [], [], []
    try:
        lab.start()
        for i in range(1 + pages):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            try:
                page = context.new_page()
                reads: list[str] = []
                page.on("request", lambda r: "/api/kernelspecs" in r.url and reads.append(r.url))
                page.set_default_timeout(120_000)
                page.goto(f"{lab.url}/lab/workspaces/bench-{i}?token={lab.token}")
                page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started")
                page.evaluate("async () => { await window.jupyterapp.restored; }")
                page.wait_for_selector("#jupyter-compute-panel", state="attached")
                if page.locator("#jupyter-compute-panel").is_visible():
                    raise AssertionError("the Compute panel was open before it was opened")
                opened = page.evaluate(OPEN)
                shown = [page.evaluate(SCROLL, [last, False]) for _ in range(scrolls)
                         if page.evaluate(SCROLL, ["bench-00000", True]) is not None]
                cdp = context.new_cdp_session(page)
                cdp.send("HeapProfiler.collectGarbage")
                heap = cdp.send("Runtime.getHeapUsage")["usedSize"] / MB
                if i:
                    opens.append(opened)
                    scrolls_ms.extend(shown)
                    heaps.append(heap)
                    spec_reads.append(float(len(reads)))
            finally:
                context.close()
    finally:
        # They are stopped rows with no process behind them: out of the store at once, rather than
        # one DELETE each when the server stops.
        store = Store(str(lab.db))
        try:
            for i in range(n):
                store.delete_target("local", f"bench-{i:05d}")
        finally:
            store.close()
        lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return opens, scrolls_ms, heaps, spec_reads


def run(rec: Recorder) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    pw = sync_playwright().start()
    browser = None
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        opens, scrolls, heaps, _ = _pages(browser, TARGETS, PAGES, SCROLLS)
        rec.add("sidebar_1000_ms", opens, "ms")
        rec.add("sidebar_scroll_end_ms", scrolls, "ms")
        rec.add("sidebar_1000_heap_mb", heaps, "MB")
        for n in GROWTH:
            try:
                opens, _, heaps, spec_reads = _pages(browser, n, GROWTH_PAGES, 0)
                rec.add(f"sidebar_at_{n}_ms", opens, "ms")
                rec.add(f"sidebar_at_{n}_heap_mb", heaps, "MB")
                rec.add(f"kernelspec_reads_at_{n}", spec_reads, "reads")
            except Exception as e:  # one size failing must not hide the others
                rec.fail(f"sidebar_at_{n}", f"{type(e).__name__}: {e}")
    finally:
        if browser is not None:
            browser.close()
        pw.stop()
