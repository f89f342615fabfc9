"""Steps with one batch per task (lib.tasks.TaskBatches: CIFAR-100's domains): each task runs
on its own data in the network, the losses, training (exact resume included), CUT's scores
and evaluation, each checked against a computation by hand."""
import pytest
import torch
import torch.nn.functional as F
from conftest import TwoHeadToy

from lib.config import load_config
from lib.losses import TaskLosses, losses_from_config
from lib.models import MultiDomainVGG16, task_model_layers, task_outputs
from lib.pruning import task_scores, task_scores_reference
from lib.tasks import TaskBatches
from lib.training import evaluate, make_loaders, train
from lib.training.data_order import epoch_loader

TASKS = ["class_0", "class_3", "class_7"]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from lib.data.synthetic.minmax import prepare_minmax_synthetic
    cfg = load_config("cifar100_mtl", profile="tiny", TASKS=TASKS, TASKS_NUM_CLASS=[5] * 3,
                      LAMBDAS=[1] * 3)
    cfg.DATA_ROOT = prepare_minmax_synthetic(cfg, root=tmp_path_factory.mktemp("cifar") / "d",
                                             progress=False)
    return cfg


def make_net(cfg, seed=0):
    torch.manual_seed(seed)
    return MultiDomainVGG16.from_config(cfg)


def step(cfg, seed=0):
    return next(iter(make_loaders(cfg, seed=seed).train))


def test_task_outputs_run_each_task_on_its_own_input(cfg):
    net = make_net(cfg).eval()
    inputs = {t: torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(i))
              for i, t in enumerate(TASKS)}
    with torch.no_grad():
        out = task_outputs(net, inputs)
        assert list(out) == TASKS
        assert all(torch.equal(out[t], net.forward_task(inputs[t], t)) for t in TASKS)
        # One shared input: the contract's forward, by name.
        shared = task_outputs(net, inputs["class_3"])
        assert torch.equal(shared["class_3"], out["class_3"])
        # A model without its own forward_task: the task's output of a full forward.
        plain = TwoHeadToy().eval()
        x = {"a": torch.randn(1, 3, 4, 4), "b": torch.randn(1, 3, 4, 4)}
        got = task_outputs(plain, x)
        assert torch.equal(got["b"], plain(x["b"])[1]) and torch.equal(got["a"], plain(x["a"])[0])
    with pytest.raises(KeyError, match=r"no input for task\(s\) \['class_7'\]"):
        task_outputs(net, {t: inputs[t] for t in TASKS[:2]})


def test_losses_from_config_see_each_tasks_own_batch(cfg):
    batch = step(cfg)
    assert isinstance(batch, TaskBatches) and list(batch) == TASKS
    net = make_net(cfg).eval()
    criterion = losses_from_config(cfg)
    with torch.no_grad():
        preds = task_outputs(net, {t: b["img"] for t, b in batch.items()})
        losses = criterion.per_task(preds, batch)
        for t in TASKS:
            expected = F.cross_entropy(net.forward_task(batch[t]["img"], t), batch[t]["label"])
            assert losses[t] == pytest.approx(float(expected))


def test_training_steps_every_domain_through_its_own_batchnorm(cfg, tmp_path):
    loaders = make_loaders(cfg, seed=2)
    first = next(iter(epoch_loader(loaders.train, seed=2)))
    net = make_net(cfg)
    before = make_net(cfg).train()
    result = train(net, losses_from_config(cfg), loaders.train, cfg, tmp_path / "r",
                   max_iters=1, seed=2, log=False)
    conv = before.network_block[0]
    for k, t in enumerate(TASKS):
        x, y = first[t]["img"], first[t]["label"]
        with torch.no_grad():
            expected_loss = F.cross_entropy(before.forward_task(x, t), y)
            # BN momentum 0.1 from a zero running mean: 0.1 x this domain's batch mean.
            expected_mean = 0.1 * conv(x).mean(dim=(0, 2, 3))
        assert result.history[f"loss/{t}"][0][1] == pytest.approx(float(expected_loss), rel=1e-5)
        bn = result.net.network_block[1].bn_list[k]
        assert torch.allclose(bn.running_mean, expected_mean, atol=1e-6)


class Interrupt(TaskLosses):
    """The config's losses, interrupting the ``at``-th training step."""

    def __init__(self, cfg, at):
        base = losses_from_config(cfg)
        super().__init__(base.losses, base.lambdas)
        self.at, self.calls = at, 0

    def per_task(self, preds, batch):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return super().per_task(preds, batch)


def test_interrupted_and_resumed_multidomain_run_equals_uninterrupted(cfg, tmp_path):
    loaders = make_loaders(cfg, seed=1)
    common = dict(max_iters=7, seed=1, log=False)   # 5 steps an epoch: crosses an epoch
    full = train(make_net(cfg), losses_from_config(cfg), loaders.train, cfg, tmp_path / "a",
                 **common)
    with pytest.raises(KeyboardInterrupt):
        train(make_net(cfg), Interrupt(cfg, at=6), loaders.train, cfg, tmp_path / "b", **common)
    resumed = train(make_net(cfg, seed=5), losses_from_config(cfg), loaders.train, cfg,
                    tmp_path / "b", resume=True, **common)
    assert full.history["loss/total"] == resumed.history["loss/total"]
    assert all(torch.equal(a, b) for a, b in zip(full.net.state_dict().values(),
                                                 resumed.net.state_dict().values()))


def test_cut_scores_take_each_task_model_on_its_own_data(cfg):
    net = make_net(cfg).eval()
    criterion = losses_from_config(cfg)
    batch = step(cfg)
    scores = task_scores(net, criterion, [batch], TASKS[:2], num_batches=1)
    for t in TASKS[:2]:
        layers = task_model_layers(net, t)
        loss = F.cross_entropy(net.forward_task(batch[t]["img"], t), batch[t]["label"])
        grads = torch.autograd.grad(loss, [m.weight for m in layers.values()])
        for (name, module), g in zip(layers.items(), grads):
            assert torch.allclose(scores[t][name], (g * module.weight).abs(), atol=1e-7), name
    reference = task_scores_reference(net, criterion, [batch], TASKS[:2], num_batches=1)
    assert all(torch.allclose(reference[t][n], s, atol=1e-7)
               for t in scores for n, s in scores[t].items())


def test_evaluation_counts_each_domains_test_images(cfg):
    loaders = make_loaders(cfg)
    net = make_net(cfg)
    metrics = evaluate(net, loaders.test, cfg, progress=False)
    net.eval()
    for t, dataset in zip(TASKS, loaders.test.datasets):
        with torch.no_grad():
            items = [dataset[i] for i in range(len(dataset))]
            logits = net.forward_task(torch.stack([it["img"] for it in items]), t)
            labels = torch.stack([it["label"] for it in items])
        assert metrics[t] == {"Acc": pytest.approx(float((logits.argmax(1) == labels).float()
                                                         .mean()))}
