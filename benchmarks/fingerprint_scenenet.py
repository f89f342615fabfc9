"""Fingerprint of SceneNet results on the tests' fixtures, to prove a refactor changed nothing.

Prints one JSON object: SHA-256 digests of the masks, per-task masks, metadata, per-task
scores, state dicts, checkpoint and sidecar bytes, edge-artifact bytes, metrics and fine-tuned
weights that the pipeline produces on the tiny fixture of ``tests/conftest.py`` (tiny profile,
untrained 3-task SceneNet, seed 0, two random batches). Run it at two commits and compare:

    PYTHONHASHSEED=0 PYTHONPATH=$PWD python benchmarks/fingerprint_scenenet.py > after.json
    git worktree add /tmp/before <commit> && (cd /tmp/before && PYTHONHASHSEED=0 PYTHONPATH=$PWD \\
        python $OLDPWD/benchmarks/fingerprint_scenenet.py > $OLDPWD/before.json)
    python benchmarks/fingerprint_scenenet.py --compare before.json after.json

It works with the API before and after the model contract (``prune`` returning a network with
``pruning_meta``/``task_masks`` attributes, or a result object with ``net``/``meta``/
``task_masks``), so the same script runs at both commits. Not a benchmark of speed: it exists to
show that SceneNet's numbers and files are bit-identical across a refactor.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path.cwd()))
sys.path.insert(0, str(Path.cwd() / "tests"))


def digest(obj) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()[:16]


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        for k in obj:
            h.update(str(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bytes):
        h.update(obj)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def unpack(out):
    """(net, meta, task_masks) from either API's ``prune`` return value."""
    if hasattr(out, "meta") and hasattr(out, "net"):
        return out.net, dict(out.meta), out.task_masks
    return out, dict(out.pruning_meta), getattr(out, "task_masks", None)


def fixture():
    from conftest import make_random_batch
    from lib.config import load_config
    from lib.losses import SceneNetLoss
    from lib.models import SceneNet

    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.manual_seed(0)
    net = SceneNet.from_config(cfg).eval()
    criterion = SceneNetLoss.from_config(cfg)
    loader = [make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=i) for i in range(2)]
    return cfg, net, criterion, loader


def file_digest(path: Path) -> str:
    """Digest of what a file holds, independent of what is arbitrary in its bytes.

    ``torch.save`` names its zip records after the (random) temporary file the atomic write
    uses, so a ``.pth`` is digested as the state dict it loads to. An edge artifact before the
    contract listed its tensors in ``set`` order (it varied from process to process), so it is
    digested as its header, its manifest with the tensors sorted by key and the blob offsets
    left out (their digits change the manifest's length), and each blob's decoded bytes.
    """
    if path.suffix == ".pth":
        return digest(torch.load(path, weights_only=True))
    if path.suffix == ".cutedge":
        from lib.export.container import ArtifactReader
        reader = ArtifactReader(path)
        manifest = dict(reader.manifest)
        entries = []
        for entry in sorted(manifest.pop("tensors"), key=lambda e: e["key"]):
            blobs = {k: reader.blob(entry[k], k) for k in ("mask", "values") if k in entry}
            entries.append({**{k: ({kk: vv for kk, vv in v.items() if kk != "offset"}
                                   if isinstance(v, dict) else v) for k, v in entry.items()},
                            "blobs": blobs})
        return digest({"head": path.read_bytes()[:12], "manifest": manifest,
                       "tensors": entries})
    return digest(path.read_bytes())


def file_digests(folder: Path) -> dict:
    return {p.name: file_digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


def fingerprint() -> dict:
    from lib.export import load_artifact, save_artifact
    from lib.metrics import SceneNetEval, evaluate
    from lib.pruning import masks_of, prune, save_pruned, sparsity_report, task_scores
    from lib.pruning.structured import channel_spec, structured_cut_prune

    torch.set_num_threads(1)
    cfg, net, criterion, loader = fixture()
    out: dict = {}
    out["scores"] = digest(task_scores(net, criterion, loader, ["seg", "depth"], 2,
                                       progress=False))
    out["scores_train"] = digest(task_scores(net, criterion, loader, ["sn"], 1, mode="train",
                                             progress=False))
    methods = ["cut", "lth", "snip", "snip_untrained", "random", "random_untrained",
               "disparse_static", "disparse_pt"]
    evaluator = SceneNetEval.from_config(cfg, tasks=["seg", "depth"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for method in methods:
            for budget in ({"keep_ratio": 0.1}, {"sparsity": 85.0}, {"sparsity": 50.0}):
                key = f"{method}/{'/'.join(f'{k}={v}' for k, v in budget.items())}"
                pruned, meta, task_masks = unpack(prune(
                    method, net, criterion, loader, selected_tasks=["seg", "depth"],
                    num_batches=2, seed=3, **budget))
                folder = tmp / key.replace("/", "_")
                save_pruned(pruned, folder / "p.pth", meta=meta, full_net=net)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    save_artifact(pruned, folder / "a.cutedge")
                    save_artifact(pruned, folder / "a16.cutedge", dtype="float16")
                metrics = evaluate(pruned.eval(), loader, evaluator, progress=False)
                out[key] = {"masks": digest(masks_of(pruned)), "meta": digest(meta),
                            "task_masks": digest(task_masks), "state": digest(pruned.state_dict()),
                            "sparsity": digest(sparsity_report(pruned, net)),
                            "files": file_digests(folder), "metrics": digest(metrics),
                            "artifact_state": digest(load_artifact(folder / "a.cutedge")
                                                     .state_dict())}
        structured = structured_cut_prune(net, criterion, loader, ["depth", "seg"], 0.5, 2)
        out["extra"] = extra_fingerprint(cfg, net, criterion, loader, tmp)
        out["structured"] = {"spec": digest(channel_spec(structured)),
                             "state": digest(structured.state_dict())}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_artifact(structured, tmp / "s.cutedge")
        out["structured"]["artifact"] = file_digest(tmp / "s.cutedge")
        out["finetune"] = finetune_fingerprint(cfg, net, criterion, loader, tmp)
    return out


def extra_fingerprint(cfg, net, criterion, loader, tmp: Path) -> dict:
    """Train-mode CUT, the full network's losses and metrics, reloads, the reference's state
    dict and onnxruntime outputs."""
    from lib.export import check_onnx_parity, export_onnx
    from lib.metrics import SceneNetEval, evaluate
    from lib.pruning import load_pruned, masks_of, prune, reference_state_dict, save_pruned

    out = {}
    trained, meta, task_masks = unpack(prune("cut", net, criterion, loader,
                                             selected_tasks=["sn", "seg"], keep_ratio=0.2,
                                             num_batches=2, seed=5, mode="train"))
    out["cut_train"] = digest([masks_of(trained), meta, task_masks])
    with torch.no_grad():
        out["losses"] = digest(criterion.per_task(net(loader[0]["img"]), loader[0]))
    out["metrics_full"] = digest(evaluate(net, loader, SceneNetEval.from_config(cfg),
                                          progress=False))
    save_pruned(trained, tmp / "t.pth", meta=meta, full_net=net)
    loaded, loaded_meta = load_pruned(tmp / "t.pth")
    with torch.no_grad():
        out["reloaded"] = digest([loaded.eval()(loader[1]["img"]), loaded_meta])
    out["reference_state"] = digest(reference_state_dict(trained, net))
    onnx_path = export_onnx(trained, tmp / "t.onnx", (1, 3, 48, 64))
    parity = check_onnx_parity(trained, onnx_path, loader[0]["img"][:1])
    out["onnx"] = digest([parity["ok"], sorted(parity["per_output"])])
    return out


def finetune_fingerprint(cfg, net, criterion, loader, tmp: Path) -> dict:
    from lib.training import finetune

    pruned, meta, _ = unpack(__import__("lib.pruning", fromlist=["prune"]).prune(
        "cut", net, criterion, loader, selected_tasks=["depth", "sn"], sparsity=90,
        num_batches=2, seed=7))
    samples = [{k: v[i] for k, v in batch.items()} for batch in loader for i in range(2)]
    data = torch.utils.data.DataLoader(samples, batch_size=2, shuffle=True)
    kwargs = {"meta": meta} if "meta" in finetune.__code__.co_varnames else {}
    result = finetune(pruned, criterion, data, cfg, tmp / "ft", max_iters=3, seed=1, log=False,
                      **kwargs)
    return {"state": digest(result.net.state_dict()),
            "history": digest(result.history),
            "final_model.pth": file_digest(tmp / "ft" / "final_model.pth"),
            "final_model.json": file_digest(tmp / "ft" / "final_model.json")}


def compare(before: dict, after: dict, where: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += compare(a, b, f"{where}{key}/")
        elif a != b:
            diffs.append(f"{where}{key}: {a} -> {b}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        diffs = compare(before, after)
        print("\n".join(diffs) if diffs else f"identical: {len(json.dumps(before))} bytes of "
                                             f"digests agree")
        return 1 if diffs else 0
    print(json.dumps(fingerprint(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
