"""Two gloo processes on the CPU train one model with DistributedDataParallel."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from conftest import make_random_batch
from lib.config import load_config
from lib.losses import SceneNetLoss
from lib.models import SceneNet
from lib.training import read_checkpoint, train

WORLD = 2


class BatchItems(Dataset):
    def __init__(self, batch):
        self.batch, self.n = batch, batch["img"].shape[0]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def _worker(rank: int, init_file: str, run_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        cfg = load_config("nyuv2_3task", profile="tiny")
        torch.manual_seed(rank)  # different initial weights per rank: DDP must sync them
        net = SceneNet.from_config(cfg)
        initial = {k: v.clone() for k, v in net.state_dict().items()}
        data = BatchItems(make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, batch_size=6,
                                            height=48, width=64, seed=0))
        result = train(net, SceneNetLoss.from_config(cfg), DataLoader(data, batch_size=2,
                       shuffle=True), cfg, run_dir, max_iters=3, log=False, device="cpu")
        torch.save({"final": result.net.state_dict(), "initial": initial,
                    "history": result.history}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_in_sync_and_write_one_checkpoint(tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(run_dir), str(out_dir)), nprocs=WORLD,
             join=True)
    r0, r1 = (torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["final"].keys() == r1["final"].keys()
    for key in r0["final"]:
        assert torch.equal(r0["final"][key], r1["final"][key]), key
    moved = [k for k in r0["final"] if k.endswith("weight") and
             not torch.equal(r0["final"][k], r0["initial"][k])]
    assert moved, "no weight changed: the processes did not train"
    assert len(r0["history"]["loss/total"]) == 3
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["base_model.pth", "history.json", "last.pth"]
    ckpt = read_checkpoint(run_dir / "last.pth")
    assert ckpt["iteration"] == 3 and ckpt["world_size"] == WORLD and len(ckpt["rng"]) == WORLD
    for key in r0["final"]:
        assert torch.equal(ckpt["model"][key], r0["final"][key]), key
