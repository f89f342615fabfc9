"""lib.export: lossless artifact, refusals of bad files, ONNX parity, measured size report."""
import json
import re
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.cli import main as cli_main
from lib.export import (FORMAT_VERSION, MAGIC, ArtifactFormatError, check_onnx_parity, conv_macs,
                        effective_state_dict, export_onnx, has_prune_hooks, load_artifact, max_output_difference, parameter_counts, plot_report,
                        prune_masks, read_manifest, report_markdown, save_artifact,
                        size_speed_report)
from lib.export.artifact import decode_mask, encode_mask
from lib.models import SceneNet
from lib.pruning import install_masks, save_pruned

TASKS, NUM_CLASS = ["seg", "sn", "depth"], [40, 3, 1]
SHAPE = (1, 3, 48, 64)


def tiny_dense(seed: int = 0) -> SceneNet:
    torch.manual_seed(seed)
    return SceneNet(NUM_CLASS, "ResNet18", 0.125, tasks=TASKS).eval()


def tiny_compact(sparsity: float = 0.9, seed: int = 0) -> SceneNet:
    """Heads depth, seg (ids 3, 1) of the dense net, global-magnitude masks installed."""
    dense = tiny_dense(seed)
    net = SceneNet([1, 40], "ResNet18", 0.125, task_ids=[3, 1], tasks=["depth", "seg"])
    net.load_state_dict(dense.state_dict(), strict=False)
    weights = {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    threshold = flat.kthvalue(int(sparsity * flat.numel())).values
    install_masks(net, {k: w.detach().abs() > threshold for k, w in weights.items()})
    return net.eval()


def image(seed: int = 1) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * 50


def test_round_trip_is_lossless_and_plain(tmp_path):
    net = tiny_compact()
    info = save_artifact(net, tmp_path / "m.cutedge")
    assert info["bytes"] == os.path.getsize(tmp_path / "m.cutedge")
    assert info["had_masks"] and info["sparse_tensors"] == len(prune_masks(net)) > 0
    assert info["values_stored"] < 0.2 * info["values_total"]
    loaded = load_artifact(tmp_path / "m.cutedge")
    assert not has_prune_hooks(loaded) and loaded.task_ids == [3, 1]
    assert loaded.tasks == ["depth", "seg"]
    expected = effective_state_dict(net)
    got = loaded.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(image()), loaded(image())))
    # Only the kept heads are stored, and sparsely: far smaller than the masked state dict.
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    assert info["bytes"] < 0.25 * os.path.getsize(tmp_path / "sd.pth")
    assert not any(k.startswith("task2_") for k in got)


def test_float16_is_smaller_and_reported_separately(tmp_path):
    net = tiny_compact()
    fp32 = save_artifact(net, tmp_path / "a32.cutedge")
    fp16 = save_artifact(net, tmp_path / "a16.cutedge", dtype="float16")
    assert fp16["dtype"] == "float16" and read_manifest(fp16["path"])["dtype"] == "float16"
    assert fp16["value_bytes"] < 0.6 * fp32["value_bytes"]
    loaded = load_artifact(fp16["path"])
    assert loaded.backbone.conv1.weight.dtype == torch.float32
    diff = max_output_difference(net, loaded, image())
    with torch.no_grad():
        scale = max(float(o.abs().max()) for o in net(image()))
    assert 0 < diff < 1e-2 * scale
    with pytest.raises(ValueError, match="dtype 'int8' not supported"):
        save_artifact(net, tmp_path / "bad.cutedge", dtype="int8")


def test_network_without_masks_is_exported_dense_with_a_warning(tmp_path):
    net = tiny_dense()
    with pytest.warns(UserWarning, match="no prune masks"):
        info = save_artifact(net, tmp_path / "d.cutedge")
    assert not info["had_masks"] and info["sparse_tensors"] == 0
    loaded = load_artifact(info["path"])
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("numel,pattern", [(13, "none"), (13, "all"), (1000, "gaps"),
                                           (4099, "random")])
def test_mask_codecs_round_trip(numel, pattern):
    rng = np.random.default_rng(0)
    mask = {"none": np.zeros(numel, bool), "all": np.ones(numel, bool),
            "gaps": np.isin(np.arange(numel), [0, 300, 999]),  # gaps >= 255 are escaped
            "random": rng.random(numel) < 0.1}[pattern]
    codec, data = encode_mask(mask)
    assert np.array_equal(decode_mask(codec, data, numel, int(mask.sum()), "t"), mask)
    # The delta codec is exact too, whichever one encode_mask chose.
    kept = np.flatnonzero(mask)
    gaps = np.diff(kept, prepend=-1) - 1
    esc = gaps >= 255
    delta = (np.array([esc.sum()], "<u8").tobytes() + gaps[esc].astype("<u4").tobytes()
             + np.minimum(gaps, 255).astype(np.uint8).tobytes())
    assert np.array_equal(decode_mask("delta", delta, numel, int(mask.sum()), "t"), mask)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_truncated_artifact_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "m.cutedge"
    save_artifact(tiny_compact(), path)
    data = path.read_bytes()
    for cut in (5, 30, len(data) - 7):
        bad = tmp_path / f"cut{cut}.cutedge"
        bad.write_bytes(data[:cut])
        with pytest.raises(ArtifactFormatError, match="truncated") as exc:
            load_artifact(bad)
        assert str(bad) in _one_line(exc)


def test_other_version_and_corruption_are_refused(tmp_path):
    path = tmp_path / "m.cutedge"
    save_artifact(tiny_compact(), path)
    data = bytearray(path.read_bytes())
    other = tmp_path / "v2.cutedge"
    other.write_bytes(bytes(data[:8]) + struct.pack("<I", FORMAT_VERSION + 1) + bytes(data[12:]))
    with pytest.raises(ArtifactFormatError, match=f"version {FORMAT_VERSION + 1}, expected "
                                                  f"version {FORMAT_VERSION}") as exc:
        load_artifact(other)
    assert str(other) in _one_line(exc)
    data[-3] ^= 0xFF  # flip bits inside the last blob
    corrupt = tmp_path / "crc.cutedge"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ArtifactFormatError, match="CRC-32"):
        load_artifact(corrupt)


class _Payload:
    """Unpickling this object would create a marker file: the loader must never do it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payloads_are_refused_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    pickled = tmp_path / "evil.cutedge"
    pickled.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(ArtifactFormatError, match="not a CUT edge artifact") as exc:
        load_artifact(pickled)
    assert str(pickled) in _one_line(exc)
    # A valid header whose manifest points at a pickle blob declared as Python objects.
    blob = pickle.dumps(_Payload(marker))
    manifest = {"format": "cut-edge-artifact", "architecture": tiny_dense().architecture(),
                "channels": None, "dtype": "float32", "blob_bytes": len(blob),
                "tensors": [{"key": "backbone.conv1.weight", "shape": [len(blob)],
                             "dtype": "float32", "stored_dtype": "object", "encoding": "dense",
                             "values": {"offset": 0, "length": len(blob), "raw_length": len(blob),
                                        "compression": "none",
                                        "crc32": __import__("zlib").crc32(blob)}}]}
    text = json.dumps(manifest).encode()
    crafted = tmp_path / "crafted.cutedge"
    crafted.write_bytes(struct.pack("<8sIQI", MAGIC, FORMAT_VERSION, len(text),
                                    __import__("zlib").crc32(text)) + text + blob)
    with pytest.raises(ArtifactFormatError, match="dtype 'object'"):
        load_artifact(crafted)
    assert not marker.exists()


def test_onnx_export_removes_prune_hooks_and_matches_pytorch(tmp_path):
    import onnx

    net = tiny_compact()
    net(image())  # a masked forward with autograd on: the copy must still work
    path = export_onnx(net, tmp_path / "m.onnx", SHAPE)
    assert has_prune_hooks(net)  # the caller's network keeps its masks
    model = onnx.load(str(path))
    names = [init.name for init in model.graph.initializer]
    assert not any(n.endswith(("_orig", "_mask")) for n in names)
    assert [o.name for o in model.graph.output] == ["depth", "seg"]
    parity = check_onnx_parity(net, path, image())
    assert parity["ok"], parity
    assert parity["max_abs_diff"] < 1e-3


def test_conv_macs_counts_from_shapes():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1, stride=2))
    with torch.no_grad():
        net[1].weight[:2] = 0
    macs = conv_macs(net, (1, 3, 10, 12))
    assert macs["dense"] == 10 * 12 * 8 * 3 * 9 + 5 * 6 * 4 * 8
    assert macs["effective"] == 10 * 12 * 8 * 3 * 9 + 5 * 6 * 4 * 8 // 2


def test_size_speed_report_measures_the_files_it_writes(tmp_path):
    dense, compact = tiny_dense(), tiny_compact()
    rows = size_speed_report(dense, compact, SHAPE, threads=1, repeats=1, warmup=0,
                             out_dir=tmp_path)
    assert [r["model"] for r in rows] == ["dense", "compact"]
    for row in rows:
        for key in ("state_dict", "artifact", "artifact_fp16", "onnx"):
            assert row[f"{key}_bytes"] == os.path.getsize(row[f"{key}_path"])
        assert row["onnx_parity_ok"] and row["torch_latency_ms"] > 0 and row["threads"] == 1
    d, c = rows
    assert d["params_total"] == sum(p.numel() for p in dense.parameters())
    assert d["params_nonzero"] > 0.99 * d["params_total"]  # only BN biases start at zero
    assert c["params_nonzero"] < 0.2 * c["params_total"]
    assert c["macs_effective"] < 0.2 * c["macs_dense"] < d["macs_dense"]
    assert c["size_ratio"] == c["artifact_bytes"] / d["state_dict_bytes"] < 0.2
    assert parameter_counts(compact)["nonzero"] == c["params_nonzero"]
    table = report_markdown(rows)
    assert "| compact |" in table and "MACs" in table and "1 thread" in table
    fig = plot_report(rows, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 0 and len(fig.axes) == 3


def test_cli_exports_a_pruned_checkpoint(capsys, tmp_path):
    net = tiny_compact()
    save_pruned(net, tmp_path / "pruned.pth")  # state dict + JSON sidecar, as pruning writes
    torch.save(tiny_dense().state_dict(), tmp_path / "base.pth")
    out = tmp_path / "out"
    assert cli_main(["export", "--checkpoint", str(tmp_path / "pruned.pth"), "--out", str(out),
                     "--dtype", "both", "--onnx", "--input-shape", *map(str, SHAPE),
                     "--dense", str(tmp_path / "base.pth"), "--config", "nyuv2_3task",
                     "--profile", "tiny", "--repeats", "1", "--threads", "1"]) == 0
    assert "| compact |" in (out / "report.md").read_text() and (out / "report.png").is_file()
    loaded = load_artifact(out / "pruned.cutedge")
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(image()), loaded(image())))
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["onnx"]["ok"] and len(summary["artifacts"]) == 2
    assert [r["model"] for r in summary["report"]] == ["dense", "compact"]
    assert summary["artifacts"][0]["max_abs_output_diff"] == 0.0
    torch.save(net.state_dict(), tmp_path / "alone.pth")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "alone.pth"), "--out", str(out)]) == 2
    assert re.search(r"error: no architecture sidecar for .*alone.pth", capsys.readouterr().err)
