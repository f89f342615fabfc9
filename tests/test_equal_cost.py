"""Structured vs unstructured CUT at equal parameter count / latency: table, figure, columns."""
import pytest
import torch

from lib.experiments.equal_cost import compare_at_equal_cost, cost_columns, plot_equal_cost


def rows():
    out = [{"method": "dense", "tasks": "seg", "delta": 0.0}]
    for params, ms, delta in ((4e6, 100.0, -1.0), (2e6, 101.0, -3.0), (1e6, 99.0, -9.0)):
        out.append({"method": "cut", "tasks": "seg", "delta": delta, "params_nonzero": params,
                    "latency_ms": ms})
    for params, ms, delta in ((3e6, 40.0, -2.0), (5e6, 60.0, -0.5), (0.5e6, 10.0, -20.0)):
        out.append({"method": "structured_cut", "tasks": "seg", "delta": delta,
                    "params_nonzero": params, "latency_ms": ms})
    return out


def test_structured_is_compared_at_the_unstructured_delta_of_equal_cost():
    table = compare_at_equal_cost(rows(), "params_nonzero")
    by_cost = {r["params_nonzero"]: r for r in table}
    assert by_cost[3e6]["delta_unstructured"] == pytest.approx(-2.0)   # halfway -3 .. -1
    assert by_cost[3e6]["advantage"] == pytest.approx(0.0)
    assert by_cost[5e6]["delta_unstructured"] is None                  # never extrapolated
    assert by_cost[0.5e6]["advantage"] is None
    at_latency = compare_at_equal_cost(rows(), "latency_ms")
    # Unstructured rows all run ~100 ms: a 40 ms structured model has no counterpart.
    assert all(r["delta_unstructured"] is None for r in at_latency)
    with pytest.raises(ValueError, match="x must be one of"):
        compare_at_equal_cost(rows(), "sparsity")


def test_equal_cost_figure_and_measured_columns(tmp_path, tiny_setup):
    path = plot_equal_cost(rows(), tmp_path / "eq.png", title="test")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="no rows of methods"):
        plot_equal_cost([{"method": "lth", "tasks": "seg", "delta": 1.0}], tmp_path / "x.png")
    cfg, net, criterion, loader = tiny_setup
    cols = cost_columns(net.select(["seg"]), (1, 3, 48, 64), threads=1, repeats=1)
    assert cols["params_total"] == sum(p.numel() for p in net.select(["seg"]).parameters())
    assert 0 < cols["params_nonzero"] <= cols["params_total"]
    assert cols["latency_ms"] > 0 and cols["latency_engine"] == "onnxruntime"
