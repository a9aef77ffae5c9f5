"""The goals of the issue, each checked against its peer figure from the same run."""
from __future__ import annotations

from typing import Callable


def _p(figures: dict, key: str, at: str = "p50") -> float | None:
    f = figures.get(key)
    return None if f is None else f.get(at)


def _goal(comparison: str, value: float | None, limit: float | None, ok: Callable[[float, float], bool]) -> dict:
    met = value is not None and limit is not None and ok(value, limit)
    return {"comparison": comparison, "value": None if value is None else round(value, 3),
            "limit": None if limit is None else round(limit, 3), "met": met}


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
        "route_vs_ipp": _goal("route_rtt_ms p50 <= ipp_px_rtt_ms p50",
                              _p(f, "route_rtt_ms"), _p(f, "ipp_px_rtt_ms"), le),
        "hop_cost": _goal("route_rtt_ms p50 - native_rtt_ms p50 <= floor_kernel_rtt_ms p50 + 1",
                          _minus(_p(f, "route_rtt_ms"), _p(f, "native_rtt_ms")),
                          _plus(_p(f, "floor_kernel_rtt_ms"), 1), le),
        "kernel_target_vs_floor": _goal("kernel_target_rtt_ms p50 <= 1.1 * floor_kernel_rtt_ms p50",
                                        _p(f, "kernel_target_rtt_ms"), _times(_p(f, "floor_kernel_rtt_ms"), 1.1), le),
        "ssh_kernel_vs_floor": _goal("ssh_kernel_rtt_ms p50 <= floor_kernel_rtt_ms p50 + 1",
                                     _p(f, "ssh_kernel_rtt_ms"), _plus(_p(f, "floor_kernel_rtt_ms"), 1), le),
        "jupyter_kernel_vs_floor": _goal("jupyter_kernel_rtt_ms p50 <= 2 * floor_kernel_rtt_ms p50",
                                         _p(f, "jupyter_kernel_rtt_ms"), _times(_p(f, "floor_kernel_rtt_ms"), 2), le),
        "kernel_target_interrupt": _goal("kernel_target_interrupt_s p95 < 2",
                                         _p(f, "kernel_target_interrupt_s", "p95"), 2, lt),
        "jupyter_kernel_pull": _goal("jupyter_kernel_pull_mb_s p50 >= jupyter_websocket_pull_mb_s p50 / 2",
                                     _p(f, "jupyter_kernel_pull_mb_s"),
                                     _times(_p(f, "jupyter_websocket_pull_mb_s"), 0.5), ge),
        "dask_route_vs_submit": _goal("dask_route_rtt_ms p50 <= dask_submit_rtt_ms p50 + 2",
                                      _p(f, "dask_route_rtt_ms"), _plus(_p(f, "dask_submit_rtt_ms"), 2), le),
        "stream_vs_native": _goal("route_stream_mb_s p50 >= native_stream_mb_s p50 / 2",
                                  _p(f, "route_stream_mb_s"), _times(_p(f, "native_stream_mb_s"), 0.5), ge),
        "first_output": _goal("first_output_ms p50 < 10", _p(f, "first_output_ms"), 10, lt),
        "push_pull_vs_peers": _goal("push_pull_mb_s p50 >= max(ipp_push_pull_mb_s p50, dask_scatter_gather_mb_s p50)",
                                    _p(f, "push_pull_mb_s"),
                                    _best(_p(f, "ipp_push_pull_mb_s"), _p(f, "dask_scatter_gather_mb_s")), ge),
        "list_1000": _goal("list_1000_ms p50 <= 20", _p(f, "list_1000_ms"), 20, le),
        "event_latency": _goal("event_latency_ms p50 <= 50", _p(f, "event_latency_ms"), 50, le),
        "loop_lag": _goal("loop_lag_ms p95 <= 20", _p(f, "loop_lag_ms", "p95"), 20, le),
        "sidebar_1000": _goal("sidebar_1000_ms p50 <= 300", _p(f, "sidebar_1000_ms"), 300, le),
        "load_clean": _goal("load: errors other than 409 == 0 and the final state matches (value: errors, "
                            "limit: 0; a mismatch counts as one more)",
                            None if not load else load.get("errors", 0) + (0 if load.get("final_state_matches") else 1),
                            0, le),
    }


def table(goals: dict[str, dict]) -> str:
    lines = [f"{'goal':<22} {'value':>10} {'limit':>10}  met   comparison"]
    for name, g in goals.items():
        v = "-" if g["value"] is None else g["value"]
        lim = "-" if g["limit"] is None else g["limit"]
        lines.append(f"{name:<22} {v:>10} {lim:>10}  {'yes' if g['met'] else 'NO ':<5} {g['comparison']}")
    return "\n".join(lines)
