"""lib.export int8: ORT parity, pruned zeros kept, the sparse int8 artifact, calibration refusals."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.export import (ArtifactFormatError, CalibrationError, OnnxNet, PruneHooksError,
                        has_prune_hooks, int8_fidelity, int8_session, load_int8_model,
                        pruned_zeros_kept, quantize_compact, quantize_network, quantized_weights,
                        save_artifact, save_int8_artifact)
from lib.export.int8_artifact import read_int8_manifest
from lib.metrics import SceneNetEval
from lib.models import SceneNet
from lib.pruning import install_masks

from conftest import make_random_batch

TASKS, NUM_CLASS = ["seg", "sn", "depth"], [40, 3, 1]
SHAPE = (1, 3, 48, 64)
# int8 vs float32 outputs: within this fraction of the largest float output (tiny random net,
# activations calibrated on 8 images); measured ~1-3 %.
INT8_REL_TOL = 0.08


def compact(sparsity: float = 0.9, tasks=("depth", "seg")) -> SceneNet:
    torch.manual_seed(0)
    dense = SceneNet(NUM_CLASS, "ResNet18", 0.125, tasks=TASKS).eval()
    net = dense.select(list(tasks)).eval()
    weights = {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    threshold = flat.kthvalue(int(sparsity * flat.numel())).values
    install_masks(net, {k: w.detach().abs() > threshold for k, w in weights.items()})
    return net


def calibration(n: int = 8, dataset: str = "nyuv2_3"):
    return [make_random_batch(TASKS, NUM_CLASS, batch_size=2, seed=10 + i, dataset=dataset)
            for i in range(n)]


def image(seed: int = 1) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * 50


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    net = compact()
    path = tmp_path_factory.mktemp("int8") / "m_int8.onnx"
    info = quantize_compact(net, path, calibration(), SHAPE, dataset="nyuv2_3")
    return net, path, info


def test_int8_parity_with_float_in_onnxruntime(int8_model):
    net, path, info = int8_model
    assert has_prune_hooks(net)  # quantize_compact worked on a plain copy
    assert info["calibration_batches"] == 8 and info["calibration_inputs"] == 16
    assert os.path.getsize(path) == info["bytes"] < 0.4 * info["float_onnx_bytes"]
    with torch.no_grad():
        ref = net(image())
    got = OnnxNet(path, net.tasks)(image())
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        scale = float(r.abs().max())
        assert float((g - r).abs().max()) <= INT8_REL_TOL * scale
        assert float((g - r).abs().max()) > 0  # it really is quantized


def test_pruned_weights_stay_exactly_zero(int8_model):
    net, path, _ = int8_model
    check = pruned_zeros_kept(net, path)
    assert check["layers"] == len([m for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert check["pruned"] > 0.85 * sum(m.weight.numel() for m in net.modules()
                                        if isinstance(m, nn.Conv2d))
    assert check["nonzero_after"] == 0
    weights = quantized_weights(path)
    assert all(w.values.dtype == np.int8 and not w.zero_point.any() for w in weights.values())
    # Per output channel: one scale per filter.
    conv1 = weights["backbone.conv1"]
    assert conv1.scale.shape == (net.backbone.conv1.out_channels,) and conv1.axis == 0


def test_zero_check_catches_a_nonzero(int8_model, tmp_path):
    import onnx
    from onnx import numpy_helper

    net, path, _ = int8_model
    model = onnx.load(str(path))
    w = quantized_weights(model)["backbone.conv1"]
    mask = net.backbone.conv1.weight_mask.bool().numpy()
    values = w.values.copy()
    values[~mask] = 1  # what a wrong quantizer would do to a pruned weight
    for init in model.graph.initializer:
        if init.name == w.initializer:
            init.CopyFrom(numpy_helper.from_array(values, w.initializer))
    assert pruned_zeros_kept(net, model)["nonzero_after"] > 0


def test_int8_artifact_round_trip_is_exact_and_sparse(int8_model, tmp_path):
    import onnx
    from onnx import numpy_helper

    net, path, info = int8_model
    art = save_int8_artifact(path, tmp_path / "m.int8.cutedge", meta={"tasks": net.tasks})
    assert art["bytes"] == os.path.getsize(tmp_path / "m.int8.cutedge")
    assert art["sparse_tensors"] > 0 and art["values_stored"] < 0.15 * art["values_total"]
    assert art["bytes"] < 0.35 * info["bytes"]           # vs the dense-int8 QDQ file
    original, loaded = onnx.load(str(path)), load_int8_model(tmp_path / "m.int8.cutedge")
    a = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in loaded.graph.initializer}
    assert set(a) == set(b)
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    x = image().numpy()
    s1, s2 = OnnxNet(path, net.tasks).session, int8_session(tmp_path / "m.int8.cutedge")
    assert all(np.array_equal(p, q) for p, q in zip(s1.run(None, {"img": x}),
                                                   s2.run(None, {"img": x})))


def test_int8_artifact_refuses_other_files(int8_model, tmp_path):
    net, path, _ = int8_model
    float_art = save_artifact(net, tmp_path / "m.cutedge")["path"]
    with pytest.raises(ArtifactFormatError, match="not an int8 artifact"):
        load_int8_model(float_art)
    art = save_int8_artifact(path, tmp_path / "m.int8.cutedge")["path"]
    data = bytearray(open(art, "rb").read())
    data[-10] ^= 0xFF
    (tmp_path / "bad.int8.cutedge").write_bytes(bytes(data))
    with pytest.raises(ArtifactFormatError, match="CRC-32"):
        load_int8_model(tmp_path / "bad.int8.cutedge")
    with pytest.raises(ValueError, match="no quantized"):
        from lib.export import export_onnx
        save_int8_artifact(export_onnx(net, tmp_path / "float.onnx", SHAPE), tmp_path / "x.cutedge")
    assert not (tmp_path / "x.cutedge").exists()


def _rewritten(path, out, edit):
    """``path``'s int8 artifact with ``edit(manifest)`` applied and its CRC recomputed."""
    import json
    import struct
    import zlib

    data = path.read_bytes()
    prefix = struct.calcsize("<8sIQI")
    magic, version, length, _ = struct.unpack_from("<8sIQI", data)
    manifest = json.loads(data[prefix:prefix + length])
    edit(manifest)
    text = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    out.write_bytes(struct.pack("<8sIQI", magic, version, len(text), zlib.crc32(text)) + text
                    + data[prefix + length:])
    return out


def test_int8_manifest_entries_are_checked_against_the_graph(int8_model, tmp_path):
    net, path, _ = int8_model
    art = Path(save_int8_artifact(path, tmp_path / "m.int8.cutedge")["path"])
    entries = read_int8_manifest(art)["weights"]
    by_key = {e["key"]: e for e in entries}
    # Two layers of the same shape with their own (different) initializers.
    a, b = next((x, y) for x in entries for y in entries
                if x["shape"] == y["shape"] and x["initializer"] != y["initializer"])

    def swap(manifest):
        w = {e["key"]: e for e in manifest["weights"]}
        w[a["key"]]["initializer"], w[b["key"]]["initializer"] = b["initializer"], a["initializer"]

    def swap_all_names(manifest):
        w = {e["key"]: e for e in manifest["weights"]}
        for field in ("initializer", "scale_initializer", "zero_point_initializer"):
            w[a["key"]][field], w[b["key"]][field] = b[field], a[field]

    def edit(key, **values):
        def apply(manifest):
            next(e for e in manifest["weights"] if e["key"] == key).update(values)
        return apply
    conv1 = by_key["backbone.conv1"]   # [8, 3, 7, 7], per channel along 0
    out_c, in_c, kh, kw = conv1["shape"]
    cases = [
        (swap, rf"weight {a['key']!r}: the graph dequantizes {b['initializer']!r} with scale"),
        (swap_all_names, rf"weight {a['key']!r}: initializer {b['initializer']!r} is the weight "
                         rf"of \[.*\] in the graph, not of {a['key']!r}"),
        (edit("backbone.conv1", shape=[in_c, out_c, kh, kw]),
         r"weight 'backbone.conv1': scale_shape \[8\] along axis 0 does not fit weight shape "
         r"\[3, 8, 7, 7\]"),
        (edit("backbone.conv1", shape=[out_c, in_c, kw * kh, 1]),
         r"weight 'backbone.conv1': shape \[8, 3, 49, 1\] does not fit its Conv node "
         r"'/backbone/conv1/Conv' \(kernel \[7, 7\]\)"),
        (edit("backbone.conv1", scale_shape=[2, 4], zero_point_shape=[2, 4]),
         r"weight 'backbone.conv1': scale_shape \[2, 4\] along axis 0 does not fit"),
        (edit("backbone.conv1", initializer="nope"),
         r"weight 'backbone.conv1': no DequantizeLinear of the graph reads initializer 'nope'"),
    ]
    for i, (change, message) in enumerate(cases):
        bad = _rewritten(art, tmp_path / f"bad{i}.int8.cutedge", change)
        with pytest.raises(ArtifactFormatError, match=message):
            load_int8_model(bad)
        with pytest.raises(ArtifactFormatError, match=message):
            int8_session(bad)


def test_structured_network_quantizes(tiny_setup, tmp_path):
    from lib.pruning.structured import structured_cut_prune

    cfg, net, criterion, loader = tiny_setup
    small = structured_cut_prune(net, criterion, loader, ["seg"], 0.5, num_batches=1).eval()
    info = quantize_network(small, tmp_path / "s.onnx", calibration(), SHAPE)
    with torch.no_grad():
        ref = small(image())[0]
    got = OnnxNet(info["path"], small.tasks)(image())[0]
    assert float((got - ref).abs().max()) <= INT8_REL_TOL * float(ref.abs().max())
    assert quantized_weights(info["path"])["backbone.conv1"].values.shape[0] == \
        small.backbone.conv1.out_channels


def test_bad_calibration_and_hooks_are_refused_before_writing(tmp_path):
    net = compact()
    out = tmp_path / "q.onnx"
    with pytest.raises(PruneHooksError, match="prune hooks .* plain_copy"):
        quantize_network(net, out, calibration(), SHAPE)
    with pytest.raises(CalibrationError, match=r"hold 3 batch.*need 8 \(at least 4\)"):
        quantize_compact(net, out, calibration(3), SHAPE)
    with pytest.raises(CalibrationError, match="num_batches=2 is below the minimum"):
        quantize_compact(net, out, calibration(), SHAPE, num_batches=2)
    cityscapes = calibration(dataset="nyuv2_3")
    for b in cityscapes:
        b.pop("normal")
        b["label19"] = b["seg"]
    with pytest.raises(CalibrationError, match="'cityscapes' layout, expected 'nyuv2_3'"):
        quantize_compact(net, out, cityscapes, SHAPE, dataset="nyuv2_3")
    with pytest.raises(CalibrationError, match=r"shape \(2, 3, 48, 64\), expected B x 3 x 96"):
        quantize_compact(net, out, calibration(), (1, 3, 96, 128))
    with pytest.raises(CalibrationError, match="not a batch dict"):
        quantize_compact(net, out, [torch.zeros(SHAPE)] * 4, SHAPE)

    class FakeLoader(list):
        class dataset:  # noqa: N801 - mimics DataLoader.dataset of a LayoutDataset
            LAYOUT = "taskonomy"
    with pytest.raises(CalibrationError, match="'taskonomy' layout"):
        quantize_compact(net, out, FakeLoader(calibration()), SHAPE, dataset="nyuv2_3")
    assert list(tmp_path.iterdir()) == []


def test_int8_fidelity_measures_task_metrics(int8_model):
    net, path, _ = int8_model
    loader = [make_random_batch(TASKS, NUM_CLASS, batch_size=2, seed=20 + i) for i in range(2)]
    evaluator = SceneNetEval("nyuv2_3", net.tasks, [1, 40], image_shape=SHAPE[2:])
    result = int8_fidelity(net, OnnxNet(path, net.tasks), loader, evaluator)
    assert set(result["delta"]) == {"depth", "seg"}
    assert result["float"]["seg"].keys() == result["int8"]["seg"].keys()
    assert result["max_abs_metric_change_pct"] is not None
    assert all(v is None or np.isfinite(v) for v in result["delta"].values())
    # The same network on both sides is no change at all.
    same = int8_fidelity(net, net, loader, evaluator)
    assert same["max_abs_metric_change_pct"] == 0.0


def test_pt2e_x86_quantizer_runs_on_scene_net():
    pytest.importorskip("torchao")
    from lib.export.pt2e import quantize_pt2e_x86
    from lib.export import plain_copy

    net = plain_copy(compact(0.5, tasks=("seg",)))
    q = quantize_pt2e_x86(net, calibration(), SHAPE)
    with torch.no_grad():
        ref, got = net(image())[0], q(image())[0]
    assert float((got - ref).abs().max()) <= INT8_REL_TOL * float(ref.abs().max())


def test_report_gains_int8_rows_task_deltas_and_tradeoff_plot(tmp_path):
    from lib.export import plot_report, report_markdown, size_speed_report
    from lib.export.report_int8 import Int8Options, TaskMetrics

    torch.manual_seed(0)
    dense = SceneNet(NUM_CLASS, "ResNet18", 0.125, tasks=TASKS).eval().select(["seg"])
    net = compact(tasks=("seg",))
    test = [make_random_batch(TASKS, NUM_CLASS, batch_size=1, seed=30 + i) for i in range(2)]
    rows = size_speed_report(
        dense, net, SHAPE, threads=1, repeats=1, warmup=0,
        int8=Int8Options(calibration(4), calibration_batches=4, dataset="nyuv2_3"),
        metrics=TaskMetrics(test, lambda tasks: SceneNetEval(
            "nyuv2_3", tasks, [dict(zip(TASKS, NUM_CLASS))[t] if t != "sn" else 3
                               for t in tasks], image_shape=SHAPE[2:])))
    by_name = {r["model"]: r for r in rows}
    assert list(by_name) == ["dense", "compact", "dense int8", "compact int8"]
    q = by_name["compact int8"]
    assert q["size_ratio_int8"] < 0.5 * by_name["compact"]["size_ratio"]
    assert q["pruned_nonzero_after_int8"] == 0 and q["onnx_latency_ms"] > 0
    assert q["macs_dense"] == by_name["compact"]["macs_dense"]
    assert "torch_latency_ms" not in q                       # no PT2E unless asked for
    assert by_name["dense"]["delta_mean"] == 0.0
    assert set(k for k in q if k.startswith("delta_vs_")) == {"delta_vs_float:seg",
                                                              "delta_vs_dense:seg"}
    table = report_markdown(rows)
    assert "| compact int8 |" in table and "Δ seg vs float %" in table and "–" in table
    fig = plot_report(rows, tmp_path / "r.png")
    assert len(fig.axes) == 6 and (tmp_path / "r.png").stat().st_size > 0
