"""lib.reports: tables and figures are written, readable, and laid out as documented."""
import csv

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from conftest import make_random_batch
from lib.reports import (group_into_lines, plot_delta_vs_sparsity, plot_loss_curves,
                         plot_metric_vs_sparsity, plot_prediction_grid, results_row,
                         segmentation_palette, table_columns, write_results_table)

DENSE = {"seg": {"mIoU": 0.30, "Pixel Acc": 0.60, "err": 1.2},
         "sn": {"Angle Mean": 17.0, "Angle Median": 14.0, "Angle 11.25": 40.0,
                "Angle 22.5": 73.0, "Angle 30": 86.0, "Angle 45": 95.0}}


def make_rows():
    rows = [results_row("dense", ["seg", "sn"], 0, 0.0, DENSE)]
    for method, shift in (("CUT", 0.01), ("DiSparse", -0.01)):
        for sparsity in (50, 70, 90):
            metrics = {t: {m: v * (1 + shift * sparsity / 90) for m, v in ms.items()}
                       for t, ms in DENSE.items()}
            rows.append(results_row(method, ["seg", "sn"], sparsity, sparsity - 1.5, metrics,
                                    delta=shift * sparsity, seed=0))
    return rows


def test_table_columns_follow_the_paper_layout():
    rows = make_rows()
    # a sn-only row first: the order must still be seg before sn, reference metric order
    rows.insert(0, {"method": "x", "sn/Angle 45": 1.0, "sn/Angle Mean": 2.0})
    cols = table_columns(rows)
    assert cols[:4] == ["method", "tasks", "nominal_sparsity", "measured_sparsity"]
    assert cols[4:7] == ["seg/mIoU", "seg/Pixel Acc", "seg/err"]
    assert cols[7] == "sn/Angle Mean" and cols[12] == "sn/Angle 45"
    assert cols[13:] == ["delta", "seed"]


def test_write_results_table_csv_and_markdown(tmp_path):
    rows = make_rows()
    csv_path, md_path = write_results_table(rows, tmp_path / "out" / "nyu_table")
    assert csv_path.name == "nyu_table.csv" and md_path.name == "nyu_table.md"
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == table_columns(rows)
    assert len(table) == len(rows)
    assert table[0]["delta"] == "" and table[0]["tasks"] == "seg+sn"
    assert float(table[3]["seg/mIoU"]) == rows[3]["seg/mIoU"]          # full precision
    lines = md_path.read_text().splitlines()
    assert len(lines) == 2 + len(rows)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["method", "selected tasks", "nominal sparsity", "measured sparsity"]
    assert "seg mIoU ↑" in header and "sn Angle Mean ↓" in header
    assert header[-2:] == ["Δ vs dense (%)", "seed"]
    dense_cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert dense_cells[0] == "dense" and dense_cells[header.index("seg mIoU ↑")] == "0.3000"
    assert dense_cells[header.index("Δ vs dense (%)")] == "–"
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_write_results_table_with_explicit_columns_and_errors(tmp_path):
    rows = make_rows()
    csv_path, _ = write_results_table(rows, tmp_path / "t", columns=["method", "delta"])
    assert csv_path.read_text().splitlines()[0] == "method,delta"
    with pytest.raises(ValueError, match=r"column\(s\) \['seg/miou'\] appear in no row"):
        write_results_table(rows, tmp_path / "t", columns=["method", "seg/miou"])
    with pytest.raises(ValueError, match="row 0 has no 'method' key"):
        write_results_table([{"tasks": "seg"}], tmp_path / "t")
    with pytest.raises(ValueError, match="no rows"):
        write_results_table([], tmp_path / "t")


def read_png(path):
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_metric_and_delta_plots(tmp_path):
    rows = make_rows()
    out = plot_metric_vs_sparsity(rows, tmp_path / "figs" / "metrics.png", title="NYU")
    wide = read_png(out)
    two = read_png(plot_metric_vs_sparsity(rows, tmp_path / "two.png",
                                           metrics=["seg/mIoU", "sn/Angle Mean"],
                                           x="nominal_sparsity"))
    assert wide.shape[0] > two.shape[0]          # 9 subplots take more rows than 2
    read_png(plot_delta_vs_sparsity(rows, tmp_path / "delta.png"))
    seg_only = results_row("CUT", ["seg"], 90, 88.0, {"seg": DENSE["seg"]}, delta=1.0)
    assert set(group_into_lines(rows + [seg_only], skip_method="dense")) == {
        "CUT [seg+sn]", "CUT [seg]", "DiSparse"}
    read_png(plot_metric_vs_sparsity(rows + [seg_only], tmp_path / "mixed.png"))
    with pytest.raises(ValueError, match="no '<task>/<metric>' column"):
        plot_metric_vs_sparsity([{"method": "a", "delta": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no 'measured_sparsity' value"):
        plot_delta_vs_sparsity([{"method": "a", "delta": 1.0}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_loss_curves(tmp_path):
    history = {"train/total": [(i, 10.0 / (i + 1)) for i in range(0, 300, 10)],
               "val/total": [(i, 5.0 / (i + 1)) for i in range(0, 300, 100)]}
    read_png(plot_loss_curves(history, tmp_path / "loss.png"))
    with pytest.raises(ValueError, match="series 'bad'"):
        plot_loss_curves({"bad": []}, tmp_path / "bad.png")


@pytest.mark.parametrize("dataset,tasks,num_class", [
    ("nyuv2_3", ["seg", "sn", "depth"], [5, 3, 1]),
    ("taskonomy", ["seg", "sn", "depth", "keypoint", "edge"], [4, 3, 1, 1, 1])])
def test_prediction_grid(tmp_path, dataset, tasks, num_class):
    batch = make_random_batch(tasks, num_class, batch_size=3, height=24, width=32,
                              dataset=dataset)
    batch["seg"][:, :, :4] = 255
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(3, c, 6, 8, generator=g) for c in num_class]
    out = plot_prediction_grid(batch["img"], preds, batch, tasks, tmp_path / "grid.png",
                               dataset=dataset, max_samples=2)
    image = read_png(out)
    assert image.shape[1] > image.shape[0]       # 2 rows, 1 + 2 * T columns
    with pytest.raises(KeyError, match="no key 'normal' for task 'sn'"):
        plot_prediction_grid(batch["img"], preds, {"seg": batch["seg"]}, tasks,
                             tmp_path / "bad.png", dataset=dataset)


def test_segmentation_palette_is_fixed_and_distinct():
    palette = segmentation_palette(40)
    assert palette.shape == (40, 3) and np.all(palette.sum(axis=1) > 0)   # black = ignore
    assert len({tuple(c) for c in palette}) == 40
    assert np.array_equal(palette, segmentation_palette(40))
