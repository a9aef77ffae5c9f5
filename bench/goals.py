"""The goals, each checked against its peer figure from the same run.

A goal is held by the medians of its figures' rounds. It is then checked round by round as well
(round i of a figure against round i of its peer, measured in the same stretch of time). When the
rounds do not all give the verdict the medians give, the goal is "within noise": this run alone
cannot tell whether it is met."""
from __future__ import annotations

from typing import Callable


class _Figures:
    """Reads figures for one verdict: the medians (``round_index`` None) or one round's medians.
    Goals on another percentile (p95) read it from the whole run, in every round."""

    def __init__(self, figures: dict, round_index: int | None = None):
        self.figures, self.round_index = figures, round_index
        self.used: list[str] = []

    def __call__(self, key: str, at: str = "p50") -> float | None:
        f = self.figures.get(key)
        if f is None:
            return None
        if at != "p50":
            return f.get(at)
        self.used.append(key)
        if self.round_index is None:
            return f.get("median", f.get("p50"))
        rounds = f.get("rounds") or []
        return rounds[self.round_index] if self.round_index < len(rounds) else None


def _goal(comparison: str, figures: dict, value: Callable, limit: Callable, ok: Callable[[float, float], bool]) -> dict:
    whole = _Figures(figures)
    v, lim = value(whole), limit(whole)
    met = v is not None and lim is not None and ok(v, lim)
    out = {"comparison": comparison, "value": None if v is None else round(v, 3),
           "limit": None if lim is None else round(lim, 3), "met": met}
    counts = {len(figures[k].get("rounds") or []) for k in set(whole.used) if k in figures}
    if v is not None and lim is not None and len(counts) == 1 and (n := counts.pop()) >= 3:
        verdicts = []
        for i in range(n):
            one = _Figures(figures, i)
            rv, rl = value(one), limit(one)
            verdicts.append(rv is not None and rl is not None and ok(rv, rl))
        out["rounds_met"], out["rounds"] = sum(verdicts), n
        out["within_noise"] = len(set(verdicts)) > 1
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _plus(a: float | None, b: float) -> float | None:
    return None if a is None else a + b


def _times(a: float | None, k: float) -> float | None:
    return None if a is None else a * k


def _best(*xs: float | None) -> float | None:
    return None if any(x is None for x in xs) else max(xs)


def check(figures: dict) -> dict[str, dict]:
    f = figures
    le = lambda v, lim: v <= lim  # noqa: E731
    ge = lambda v, lim: v >= lim  # noqa: E731
    lt = lambda v, lim: v < lim  # noqa: E731
    load = f.get("load_p99_ms") or {}
    return {
        "route_vs_ipp": _goal("route_rtt_ms <= 0.9 * ipp_px_rtt_ms", f,
                              lambda g: g("route_rtt_ms"), lambda g: _times(g("ipp_px_rtt_ms"), 0.9), le),
        "hop_cost": _goal("route_rtt_ms - native_rtt_ms <= floor_kernel_rtt_ms + 0.5", f,
                          lambda g: _minus(g("route_rtt_ms"), g("native_rtt_ms")),
                          lambda g: _plus(g("floor_kernel_rtt_ms"), 0.5), le),
        "kernel_target_vs_floor": _goal("kernel_target_rtt_ms <= 1.1 * floor_kernel_rtt_ms", f,
                                        lambda g: g("kernel_target_rtt_ms"),
                                        lambda g: _times(g("floor_kernel_rtt_ms"), 1.1), le),
        "ssh_kernel_vs_floor": _goal("ssh_kernel_rtt_ms <= floor_kernel_rtt_ms + 1", f,
                                     lambda g: g("ssh_kernel_rtt_ms"), lambda g: _plus(g("floor_kernel_rtt_ms"), 1), le),
        "jupyter_kernel_vs_floor": _goal("jupyter_kernel_rtt_ms <= 2 * floor_kernel_rtt_ms", f,
                                         lambda g: g("jupyter_kernel_rtt_ms"),
                                         lambda g: _times(g("floor_kernel_rtt_ms"), 2), le),
        "kernel_target_interrupt": _goal("kernel_target_interrupt_s p95 < 2", f,
                                         lambda g: g("kernel_target_interrupt_s", "p95"), lambda g: 2, lt),
        "jupyter_kernel_pull": _goal("jupyter_kernel_pull_mb_s >= jupyter_websocket_pull_mb_s / 2", f,
                                     lambda g: g("jupyter_kernel_pull_mb_s"),
                                     lambda g: _times(g("jupyter_websocket_pull_mb_s"), 0.5), ge),
        "dask_route_vs_submit": _goal("dask_route_rtt_ms <= dask_submit_rtt_ms + 1", f,
                                      lambda g: g("dask_route_rtt_ms"), lambda g: _plus(g("dask_submit_rtt_ms"), 1), le),
        "stream_vs_native": _goal("route_stream_mb_s >= 0.75 * native_stream_mb_s", f,
                                  lambda g: g("route_stream_mb_s"), lambda g: _times(g("native_stream_mb_s"), 0.75), ge),
        "first_output": _goal("first_output_ms < 5", f, lambda g: g("first_output_ms"), lambda g: 5, lt),
        "push_pull_vs_peers": _goal("push_pull_mb_s >= 1.2 * max(ipp_push_pull_mb_s, dask_scatter_gather_mb_s)", f,
                                    lambda g: g("push_pull_mb_s"),
                                    lambda g: _times(_best(g("ipp_push_pull_mb_s"), g("dask_scatter_gather_mb_s")), 1.2),
                                    ge),
        # Plain Python data on the Dask route: each variable is pickled once more than ipyparallel
        # does, to name the one that cannot travel before anything is sent.
        "dask_list_vs_ipp": _goal("dask_route_list_push_pull_s <= 2 * ipp_list_push_pull_s", f,
                                  lambda g: g("dask_route_list_push_pull_s"),
                                  lambda g: _times(g("ipp_list_push_pull_s"), 2), le),
        "routed_notebooks": _goal("routed_notebooks_rtt_ms p95 <= 3 * routed_notebook_rtt_ms p95", f,
                                  lambda g: g("routed_notebooks_rtt_ms", "p95"),
                                  lambda g: _times(g("routed_notebook_rtt_ms", "p95"), 3), le),
        "list_1000": _goal("list_1000_ms <= 15", f, lambda g: g("list_1000_ms"), lambda g: 15, le),
        "list_growth": _goal("list_at_10000_ms <= 12 * list_at_1000_ms", f, lambda g: g("list_at_10000_ms"),
                             lambda g: _times(g("list_at_1000_ms"), 12), le),
        "event_latency": _goal("event_latency_ms <= 20", f, lambda g: g("event_latency_ms"), lambda g: 20, le),
        "loop_lag": _goal("loop_lag_ms p95 <= 10", f, lambda g: g("loop_lag_ms", "p95"), lambda g: 10, le),
        "sidebar_1000": _goal("sidebar_1000_ms <= 150", f, lambda g: g("sidebar_1000_ms"), lambda g: 150, le),
        "sidebar_10000": _goal("sidebar_at_10000_ms < 400", f, lambda g: g("sidebar_at_10000_ms"), lambda g: 400, lt),
        "load_p99": _goal("load_p99_ms p99 <= 100", f, lambda g: g("load_p99_ms", "p99"), lambda g: 100, le),
        "load_clean": _goal("load: errors other than 409 == 0 and the final state matches (value: errors, "
                            "limit: 0; a mismatch counts as one more)", f,
                            lambda g: None if not load else load.get("errors", 0) + (
                                0 if load.get("final_state_matches") else 1),
                            lambda g: 0, le),
    }


def table(goals: dict[str, dict]) -> str:
    """Each goal by the medians, with how many rounds agree; "within noise" where they do not all."""
    lines = [f"{'goal':<24} {'value':>10} {'limit':>10}  met  rounds  comparison (medians of the rounds)"]
    for name, g in goals.items():
        v = "-" if g["value"] is None else g["value"]
        lim = "-" if g["limit"] is None else g["limit"]
        rounds = f"{g['rounds_met']}/{g['rounds']}" if "rounds" in g else "-"
        verdict = ("-   " if g["value"] is None or g["limit"] is None else  # not measured in this run
                   ("yes" if g["met"] else "NO ") + ("*" if g.get("within_noise") else " "))
        lines.append(f"{name:<24} {v:>10} {lim:>10}  {verdict} {rounds:>6}  {g['comparison']}")
    if any(g.get("within_noise") for g in goals.values()):
        lines.append("* within noise: the rounds do not all agree with the medians' verdict")
    return "\n".join(lines)
