"""Shared test fixtures. Tests run on CPU with small threads; fixtures are generated on the fly."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no OpenMP spinning
# Studies run in-process unless a test asks for Ray (tests/test_engine.py): a Ray instance per
# study would add seconds to every test that runs one.
os.environ.setdefault("CUT_ENGINE", "serial")

import pytest  # noqa: E402
import torch  # noqa: E402

TEST_THREADS = int(os.environ.get("CUT_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)
# The data content checks cache what they verified; tests keep that cache out of the home folder.
if "CUT_CACHE_DIR" not in os.environ:
    os.environ["CUT_CACHE_DIR"] = tempfile.mkdtemp(prefix="cut-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CUT_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _torch_threads_pinned():
    """Every test runs at CUT_TEST_THREADS torch threads: a command run in-process (in a test
    or a module fixture, which is set up before this one) sets torch's thread count for the
    machine (set_cpu_threads), and results compared with a subprocess (which reads
    OMP_NUM_THREADS) are bit-exact only at the same thread count."""
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(TEST_THREADS)


def make_random_batch(tasks, tasks_num_class, batch_size=2, height=48, width=64, seed=0,
                      dataset="nyuv2_3"):
    """A batch with the loaders' keys and value ranges (for tests that need no real data)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"img": torch.randn(batch_size, 3, height, width, generator=g) * 50}
    for task, num_class in zip(tasks, tasks_num_class):
        if task == "seg":
            batch["seg"] = torch.randint(0, num_class, (batch_size, 1, height, width), generator=g)
        elif task == "sn":
            n = torch.nn.functional.normalize(torch.randn(batch_size, 3, height, width, generator=g), dim=1)
            batch["normal"] = (n + 1) * 127.5 if dataset != "taskonomy" else n
        elif task == "depth":
            batch["depth"] = torch.rand(batch_size, 1, height, width, generator=g) * 5 + 0.5
            if dataset == "taskonomy":
                batch["depth_mask"] = torch.ones(batch_size, 1, height, width)
        else:
            batch[task] = torch.rand(batch_size, 1, height, width, generator=g) * 2 - 1
    return batch


@pytest.fixture
def random_batch():
    return make_random_batch


class BatchItems(torch.utils.data.Dataset):
    """Items of one in-memory batch dict (what a real loader's dataset would return)."""

    def __init__(self, batch):
        self.batch = batch
        self.n = batch["img"].shape[0]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


from lib.models import MultiTaskModel  # noqa: E402  (after the environment above)


class TwoHeadToy(MultiTaskModel):
    """The smallest multi-task network: a conv trunk and a 1-channel conv head per task
    (tests subclass it to break the contract one way each)."""

    def __init__(self, tasks=("a", "b")):
        super().__init__()
        self.tasks = list(tasks)
        self.trunk = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.heads = torch.nn.ModuleDict({t: torch.nn.Conv2d(4, 1, 1) for t in self.tasks})

    def shared_modules(self):
        return {"trunk": self.trunk}

    def task_modules(self, task):
        return {f"heads.{task}": self.heads[task]}

    def forward(self, x):
        features = self.trunk(x)
        return [self.heads[t](features) for t in self.tasks]


@pytest.fixture(scope="module")
def synthetic_cfg(tmp_path_factory):
    """The tiny NYU-v2 config on a synthetic dataset written for the test module."""
    from lib.config import load_config
    from lib.data.synthetic import prepare_synthetic

    cfg = load_config("nyuv2_3task", profile="tiny")
    cfg.DATA_ROOT = prepare_synthetic(cfg, root=tmp_path_factory.mktemp("data") / "nyu",
                                      progress=False)
    return cfg


@pytest.fixture(scope="module")
def tiny_setup():
    """(cfg, untrained tiny 3-task SceneNet in eval mode, its loss, two random batches)."""
    from lib.config import load_config
    from lib.losses import SceneNetLoss
    from lib.models import SceneNet

    cfg = load_config("nyuv2_3task", profile="tiny")
    torch.manual_seed(0)
    net = SceneNet.from_config(cfg).eval()
    criterion = SceneNetLoss.from_config(cfg)
    loader = [make_random_batch(cfg.TASKS, cfg.TASKS_NUM_CLASS, seed=i) for i in range(2)]
    return cfg, net, criterion, loader


# The layouts at the size the real files are stored at: NYU-v2 480x640 (AdaShare's samples),
# Cityscapes 256x512 (AdaShare's preprocessed set), Taskonomy 512x512 (the released PNGs,
# which the reference resizes to 256x256). Two train frames and one test frame each.
REAL_SIZES = {"nyuv2_3task": ("nyuv2_3", 480, 640), "cityscapes": ("cityscapes", 256, 512),
              "taskonomy": ("taskonomy", 512, 512)}


@pytest.fixture(scope="session")
def real_size_root(tmp_path_factory):
    """``real_size_root(config_name)``: a synthetic dataset of that config's layout written at
    the real stored size (generated once per session)."""
    from lib.data.synthetic import write_dataset

    roots = {}

    def root(config_name):
        if config_name not in roots:
            layout, height, width = REAL_SIZES[config_name]
            folder = tmp_path_factory.mktemp(f"real_{layout}") / "ds"
            roots[config_name] = str(write_dataset(folder, layout, 2, 1, height, width, seed=1))
        return roots[config_name]

    return root
