"""The bench's arithmetic: rounds, their medians and spread, and goals held by medians and checked
round by round (the bench itself is run by ``make bench``, not by the tests)."""
from __future__ import annotations

from bench import goals
from bench.common import Recorder, rounds_of


def test_samples_are_cut_into_consecutive_rounds():
    assert rounds_of(list(range(10))) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert rounds_of(list(range(7))) == [[0, 1], [2, 3], [4], [5], [6]]
    assert rounds_of([1.0, 2.0]) == [[1.0], [2.0]]  # fewer samples than rounds: one each


def test_a_figure_keeps_each_rounds_median_their_median_and_spread(capsys):
    rec = Recorder()
    rec.add("x_ms", [1, 1, 2, 2, 3, 3, 4, 4, 9, 9], "ms")
    f = rec.figures["x_ms"]
    assert f["rounds"] == [1, 2, 3, 4, 9] and f["median"] == 3 and f["spread"] == 8 and f["n"] == 10
    assert "median        3.0 ms    spread      8.0 over 5 rounds" in capsys.readouterr().out


def _figures(**series: list[float]) -> dict:
    rec = Recorder()
    for key, samples in series.items():
        rec.add(key, samples, "ms")
    return rec.figures


def test_a_goal_every_round_agrees_on_is_not_within_noise():
    f = _figures(ssh_kernel_rtt_ms=[7.0] * 10, floor_kernel_rtt_ms=[6.5] * 10)
    g = goals.check(f)["ssh_kernel_vs_floor"]
    assert (g["value"], g["limit"], g["met"]) == (7.0, 7.5, True)
    assert (g["rounds_met"], g["rounds"], g["within_noise"]) == (5, 5, False)


def test_a_goal_the_rounds_disagree_on_is_within_noise_and_said_so():
    # Met by the medians (7.4 <= 7.5), but two rounds of five miss it.
    f = _figures(ssh_kernel_rtt_ms=[7.2, 7.2, 7.3, 7.3, 7.4, 7.4, 7.9, 7.9, 8.0, 8.0],
                 floor_kernel_rtt_ms=[6.5] * 10)
    g = goals.check(f)["ssh_kernel_vs_floor"]
    assert g["met"] and (g["rounds_met"], g["rounds"], g["within_noise"]) == (3, 5, True)
    table = goals.table({"ssh_kernel_vs_floor": g})
    assert "yes*    3/5" in table and "within noise" in table


def test_a_goal_on_a_fixed_limit_or_a_p95_is_checked_too():
    f = _figures(list_1000_ms=[10, 10, 30, 30, 10, 10, 10, 10, 10, 10])
    g = goals.check(f)["list_1000"]
    assert g["met"] and (g["rounds_met"], g["within_noise"]) == (4, True)
    assert "rounds" not in goals.check(f)["route_vs_ipp"]  # figures missing: no verdict by rounds
    assert goals.check(f)["route_vs_ipp"]["met"] is False


def test_a_goal_whose_figures_were_not_measured_says_so_rather_than_no():
    table = goals.table(goals.check(_figures(list_1000_ms=[10] * 10)))
    assert [line.split()[3] for line in table.splitlines() if line.startswith(("list_1000 ", "route_vs_ipp "))] \
        == ["-", "yes"]
