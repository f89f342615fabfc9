"""Selection-based ranking against the plain sort it replaced, and the voted sparsity curve
against counting the fused masks, on cases built to break them: heavy ties, zero plateaus,
single-element layers, denormal and huge values, negative values, keep ratios at both ends."""
import pytest
import torch

from lib.pruning import (KeepsNoWeightError, MaskSparsityCurve, RememberedCurve, ScoreRanking,
                         SortedRanking, SparsityCurve, UnreachableSparsityError, VotedSparsityCurve, fuse_backbone,
                         keep_ratio_for_sparsity, mask_sparsity, prune, topk_mask)
from lib.pruning import methods as pruning_methods
from lib.pruning.ranking import key_value, kth_largest, order_keys


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- keys, selection
def test_order_keys_order_like_the_floats():
    g = gen(0)
    scale = 10.0 ** torch.randint(-40, 38, (500,), generator=g)
    values = torch.cat([torch.randn(500, generator=g) * scale,
                        torch.tensor([0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, float("inf"),
                                      float("-inf"), 1.0, 1.0, -2.0, -2.0])])
    keys = order_keys(values)
    assert keys.dtype == torch.int32
    order = torch.argsort(values, stable=True)
    assert torch.equal(torch.argsort(keys, stable=True), order)   # same order, same ties
    assert torch.equal(keys[values == 0], torch.zeros(2, dtype=torch.int32))  # -0.0 == 0.0
    for v in values.tolist():
        assert key_value(int(order_keys(torch.tensor([v]))[0])).item() == v
    positive = torch.rand(10, generator=g)
    assert order_keys(positive).data_ptr() == positive.data_ptr()  # a view, no copy


@pytest.mark.parametrize("case", ["random", "ties", "negative", "single"])
def test_kth_largest_equals_sort(case):
    g = gen(1)
    keys = {"random": torch.randint(-2**31, 2**31 - 1, (3000,), generator=g, dtype=torch.int32),
            "ties": torch.randint(0, 3, (3000,), generator=g, dtype=torch.int32) * 70000,
            "negative": -torch.randint(0, 2**20, (3000,), generator=g, dtype=torch.int32),
            "single": torch.tensor([7], dtype=torch.int32)}[case]
    ranked = keys.sort(descending=True).values
    n = keys.numel()
    for k in sorted({1, min(2, n), max(n // 3, 1), max(n - 1, 1), n}):
        key, above, equal = kth_largest(keys, k, signed=bool((keys < 0).any()))
        assert key == int(ranked[k - 1])
        assert above == int((keys > key).sum()) and equal == int((keys == key).sum())


# --------------------------------------------------------------- ScoreRanking vs a sort
def score_cases():
    g = gen(2)
    plateau = torch.rand(60, 50, generator=g)
    plateau.view(-1)[:2100] = 0.0                      # an all-zero plateau of 70 %
    return {
        "heavy ties": ({"a": torch.randint(0, 4, (40, 30), generator=g).float(),
                        "b": torch.randint(0, 4, (333,), generator=g).float()}, True),
        "zero plateau": ({"a": plateau, "b": torch.zeros(17), "c": torch.rand(5, generator=g)},
                         True),
        "single-element layers": (
            {f"l{i}": torch.rand(1, generator=g) * (i % 3) for i in range(40)}, True),
        "denormal": ({"a": torch.tensor([1e-45, 2e-45, 1e-45, 1e-40, 0.0, 1e-38, 3e-39]),
                      "b": torch.rand(50, generator=g) * 1e-39}, True),
        "huge": ({"a": torch.tensor([3.4e38, 3.4e38, 1e38, 1.0, 0.0]),
                  "b": torch.rand(40, generator=g) * 3e38}, False),
        "negative": ({"a": torch.randn(30, 30, generator=g), "b": torch.tensor([-0.0, 0.0, -1.0])},
                     False),
    }


def keep_ratios(n):
    """Both ends (one weight kept, every weight kept) and steps in between."""
    one = next(k for k in (1.0 / n, 1.0000001 / n) if int(n * k) == 1)
    return [one] + [k for k in (1.5 / n, 0.01, 0.1, 1 / 3, 0.5, 0.7, 0.999, (n - 1) / n)
                    if int(n * k) >= 1] + [1.0]


def tie_breaks(scores):
    g = gen(3)
    return {n: torch.randint(0, 3, s.shape, generator=g).float() for n, s in scores.items()}


@pytest.fixture(params=["plateaus searched", "plateaus sorted"])
def plateau_sorting(request, monkeypatch):
    """Run a test as it is, and again with every run of equal scores sorted in tie order on
    its second cut (the fast path the large plateaus of real networks take)."""
    if request.param == "plateaus sorted":
        monkeypatch.setattr(ScoreRanking, "PLATEAU_SORT_MIN", 1)
    return request.param == "plateaus sorted"


@pytest.mark.parametrize("case", list(score_cases()))
def test_selection_gives_the_thresholds_and_masks_of_a_sort(case, plateau_sorting):
    scores, normalise = score_cases()[case]
    n = sum(s.numel() for s in scores.values())
    for tie_break in (None, tie_breaks(scores)):
        ranking = ScoreRanking(scores, normalise=normalise, tie_break=tie_break)
        oracle = SortedRanking(scores, normalise=normalise, tie_break=tie_break)
        for name, s in ranking.scores.items():
            assert torch.equal(s, oracle.scores[name])              # normalised bit for bit
        for keep in keep_ratios(n):
            threshold = ranking.threshold(keep)
            assert threshold.dim() == 0 and threshold.item() == oracle.threshold(keep).item()
            for exact in (False, True):
                got, want = ranking.masks(keep, exact), oracle.masks(keep, exact)
                assert list(got) == list(want)
                for name in want:
                    assert got[name].dtype == torch.bool and got[name].shape == scores[name].shape
                    assert torch.equal(got[name], want[name]), (case, keep, exact, name)
            if keep < 1.0:  # exact keeps exactly int(n * keep)
                kept = sum(int(m.sum()) for m in ranking.masks(keep, True).values())
                assert kept == int(n * keep)
        with pytest.raises(KeepsNoWeightError, match="keeps no weight"):
            ranking.masks(0.5 / n)


@pytest.mark.parametrize("exact", [False, True])
def test_cuts_inside_a_focused_bracket_equal_a_sort(exact, plateau_sorting):
    g = gen(6)
    scores = {"a": torch.randint(0, 300, (200, 100), generator=g).float() ** 2,
              "b": torch.zeros(5000), "c": torch.rand(7000, generator=g)}
    tie_break = tie_breaks(scores)
    ranking = ScoreRanking(scores, tie_break=tie_break)
    oracle = SortedRanking(scores, tie_break=tie_break)
    n = ranking.numel
    upper, lower = ranking.cut(int(n * 0.1), exact), ranking.cut(int(n * 0.2), exact)
    ranking.focus(upper.key, lower.key, exact)
    for keep in torch.linspace(0.1, 0.2, 9).tolist():
        got, want = ranking.masks(keep, exact), oracle.masks(keep, exact)
        assert all(torch.equal(got[name], want[name]) for name in want), keep
    window = ranking._window
    assert window is not None and window.keys.numel() < n // 8  # later cuts used it
    assert (window.positions is not None) == exact
    # a second search, breaking ties inside the first one's bracket
    ranking.focus(upper.key, lower.key, exact=True)
    for keep in torch.linspace(0.11, 0.19, 7).tolist():
        got, want = ranking.masks(keep, True), oracle.masks(keep, True)
        assert all(torch.equal(got[name], want[name]) for name in want), keep
    assert ranking._window.positions is not None


def test_a_plateau_cut_twice_is_sorted_once_and_gives_the_masks_of_a_sort(monkeypatch):
    monkeypatch.setattr(ScoreRanking, "PLATEAU_SORT_MIN", 1000)
    g = gen(8)
    scores = {"a": torch.rand(3000, generator=g), "b": torch.zeros(4000),
              "c": torch.rand(500, generator=g) + 5}
    for tie_break in (None, tie_breaks(scores)):
        ranking = ScoreRanking(scores, tie_break=tie_break)
        oracle = SortedRanking(scores, tie_break=tie_break)
        zero_key = int(order_keys(torch.zeros(1))[0])
        for i, keep in enumerate((0.6, 0.5, 0.55, 0.7, 0.9)):   # every cut on the zeros
            got, want = ranking.masks(keep, exact=True), oracle.masks(keep, exact=True)
            assert all(torch.equal(got[n], want[n]) for n in want), (keep, tie_break is None)
            assert (zero_key in ranking._plateaus) == (i >= 1)   # sorted on the second cut
        plateau = ranking._plateaus[zero_key]
        assert plateau.above == 3500 and plateau.order.numel() == 4000


def test_ranking_errors_are_one_line():
    with pytest.raises(ValueError, match="cannot normalise"):
        ScoreRanking({"a": torch.zeros(3)})
    with pytest.raises(ValueError, match="NaN"):
        ScoreRanking({"a": torch.tensor([1.0, float("nan")])}, normalise=False)
    with pytest.raises(ValueError, match="keep_ratio must be"):
        ScoreRanking({"a": torch.ones(3)}).masks(1.5)
    with pytest.raises(KeepsNoWeightError):
        topk_mask({"l": torch.ones(4)}, 0.2)


# ------------------------------------------------------------- the voted sparsity curve
SHARED = {"s0": (30, 20), "s1": (1,), "s2": (2000,)}
OWN = {"seg": {"seg.h0": (40, 25), "seg.h1": (1,)}, "sn": {"sn.h0": (900,)},
       "depth": {"depth.h0": (25, 25), "depth.h1": (3,)}}


def voted_fixture(seed=4, tasks=("seg", "sn", "depth")):
    """Per-task scores over shared + own layers with ties, zero plateaus and zero weights."""
    g = gen(seed)
    scores = {}
    for t in tasks:
        layers = {**SHARED, **OWN[t]}
        s = {n: torch.randint(0, 40, shape, generator=g).float() *
             torch.rand(shape, generator=g).round() for n, shape in layers.items()}  # ~half zero
        s["s2"][:700] = 3.0                                      # a plateau away from zero
        scores[t] = s
    weights = {n: torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) > 0.05)
               for t in tasks for n, shape in {**SHARED, **OWN[t]}.items()}
    return scores, weights


def fused_masks(rankings, need_rule, keep, exact, bug=False):
    per_task = {t: r.masks(keep, exact) for t, r in rankings.items()}
    masks = fuse_backbone({t: {n: m[n] for n in SHARED} for t, m in per_task.items()}, need_rule,
                          bug)
    for t, m in per_task.items():
        masks.update({n: m[n] for n in OWN[t]})
    return masks


class Recorded(SparsityCurve):
    """Wraps a curve; records each step's keep, every interval and every exact value."""

    def __init__(self, curve):
        self.curve, self.steps, self.values, self.bounds = curve, [], {}, []

    def at(self, keep):
        self.values[keep] = value = self.curve.at(keep)
        return value

    def intervals(self, keep):
        self.steps.append(keep)
        for low, high in self.curve.intervals(keep):
            self.bounds.append((keep, low, high))
            if low == high:
                self.values[keep] = low
            yield low, high

    def narrow(self, lo, hi):
        self.curve.narrow(lo, hi)


@pytest.mark.parametrize("tasks,rule,need,bug", [
    (("seg", "sn", "depth"), 2, 2, False), (("seg", "sn", "depth"), "any", 1, False),
    (("seg", "sn", "depth"), "all", 3, False), (("seg", "depth"), 2, 2, False),
    (("sn",), 2, 1, False), (("sn",), 2, 2, True)])
@pytest.mark.parametrize("exact", [False, True])
def test_voted_curve_walks_the_search_exactly_as_counting_masks(tasks, rule, need, bug, exact,
                                                                plateau_sorting):
    scores, weights = voted_fixture(tasks=tasks)
    magnitudes = {n: w.abs() for n, w in weights.items()}
    rankings, oracle = ({t: cls(s, normalise=True, label=t, tie_break=magnitudes)
                         for t, s in scores.items()} for cls in (ScoreRanking, SortedRanking))
    longest = 0
    for target in (0.0, 12.0, 50.0, 71.3, 90.0, 99.5):
        fast = Recorded(VotedSparsityCurve(rankings, list(SHARED), need, weights, exact))
        slow = Recorded(MaskSparsityCurve(lambda k: fused_masks(oracle, rule, k, exact, bug),
                                          weights))
        outcomes = []
        for curve in (fast, slow):
            try:
                outcomes.append(keep_ratio_for_sparsity(curve, target))
            except UnreachableSparsityError as exc:
                outcomes.append((str(exc), exc.closest, exc.keep_ratio))
        assert outcomes[0] == outcomes[1]
        assert fast.steps == slow.steps                  # the same bisection, step for step
        for keep, value in fast.values.items():          # exact values: to the bit
            assert value == slow.values[keep]
        for keep, low, high in fast.bounds:                 # intervals hold the value
            assert low <= slow.values[keep] <= high
        longest = max(longest, len(fast.steps))
    assert longest > 5  # the bracket narrowed many times


@pytest.mark.parametrize("exact", [False, True])
def test_a_remembered_voted_curve_gives_every_target_a_fresh_curves_answer(exact,
                                                                           plateau_sorting):
    """One curve remembered across many targets (the explorer's slider) answers each as a
    fresh curve does, though it skips the points it knows and restarts on each search."""
    scores, weights = voted_fixture(seed=6)
    rankings = {t: ScoreRanking(s, tie_break={n: w.abs() for n, w in weights.items()})
                for t, s in scores.items()}
    remembered = RememberedCurve(VotedSparsityCurve(rankings, list(SHARED), 2, weights, exact))
    targets = torch.rand(14, generator=gen(7)).mul(99).tolist() + [50.0, 49.0, 99.5, 0.0, 50.0]
    fresh_evaluations = 0
    for target in targets:
        fresh = RememberedCurve(VotedSparsityCurve(rankings, list(SHARED), 2, weights, exact))
        outcomes = []
        for curve in (remembered, fresh):
            curve.restart()
            try:
                outcomes.append(keep_ratio_for_sparsity(curve, target))
            except UnreachableSparsityError as exc:
                outcomes.append((str(exc), exc.closest, exc.keep_ratio))
        assert outcomes[0] == outcomes[1], target
        fresh_evaluations += fresh.evaluations
    assert remembered.evaluations < fresh_evaluations / 2


def test_voted_curve_at_any_keep_equals_mask_count():
    scores, weights = voted_fixture(seed=5)
    rankings = {t: ScoreRanking(s, tie_break={n: w.abs() for n, w in weights.items()})
                for t, s in scores.items()}
    for exact in (False, True):
        curve = VotedSparsityCurve(rankings, list(SHARED), 2, weights, exact)
        for keep in (1.0, 0.3, 0.01, 0.6, 1.0):  # no narrowing: any order
            assert curve.at(keep) == mask_sparsity(fused_masks(rankings, 2, keep, exact), weights)


def test_voted_curve_refuses_a_ranking_without_the_shared_layers_first():
    scores, weights = voted_fixture()
    scores["sn"] = dict(reversed(list(scores["sn"].items())))
    rankings = {t: ScoreRanking(s) for t, s in scores.items()}
    with pytest.raises(ValueError, match="shared layers"):
        VotedSparsityCurve(rankings, list(SHARED), 2, weights)


class PlateauCurve(SparsityCurve):
    """Sparsity by keep ratio with steps and a jump (ties), known exactly or within ``slack``."""

    def __init__(self, slack):
        self.slack, self.exact_calls = slack, 0

    @staticmethod
    def value(keep):
        kept = round(keep * 64) / 64
        return 100.0 * (1 - kept) if kept < 0.4 or kept > 0.6 else 45.0  # jumps over 40..60

    def at(self, keep):
        self.exact_calls += 1
        return self.value(keep)

    def intervals(self, keep):
        v = self.value(keep)
        if self.slack:
            yield max(0.0, v - 2 * self.slack), min(100.0, v + 2 * self.slack)
            yield max(0.0, v - self.slack), min(100.0, v + self.slack)
        value = self.at(keep)
        yield value, value


@pytest.mark.parametrize("target", [3.0, 30.0, 45.1, 50.0, 58.0, 62.5, 97.0])
def test_search_with_intervals_decides_as_with_values(target):
    def outcome(curve):
        try:
            return keep_ratio_for_sparsity(curve, target)
        except UnreachableSparsityError as exc:
            return str(exc), exc.closest, exc.keep_ratio
    exact, loose = PlateauCurve(0.0), PlateauCurve(2.0)
    assert outcome(loose) == outcome(exact)
    assert loose.exact_calls < exact.exact_calls


def test_search_raises_typed_error_with_the_closest_value():
    scores = {"l": torch.ones(100)}
    with pytest.raises(UnreachableSparsityError, match="cannot reach") as info:
        keep_ratio_for_sparsity(lambda k: topk_mask(scores, k), 50.0)
    assert info.value.closest == 0.0 and 0 < info.value.keep_ratio <= 1
    assert "\n" not in str(info.value)


# -------------------------------------------------------- target mode: same as before
@pytest.mark.parametrize("method,sparsity", [("cut", 85.0), ("cut", 50.0),  # 50: ties broken
                                             ("disparse_static", 70.0)])
def test_target_mode_gives_the_keep_ratio_and_masks_of_the_sorted_search(tiny_setup, method,
                                                                         sparsity, monkeypatch):
    _, net, criterion, loader = tiny_setup
    def run():
        return prune(method, net, criterion, loader, selected_tasks=["seg", "depth"],
                     tasks=net.tasks, sparsity=sparsity, num_batches=2)
    new = run()
    with monkeypatch.context() as patch:  # before: a full sort, the search counting masks
        patch.setattr(pruning_methods, "ScoreRanking", SortedRanking)
        patch.setattr(pruning_methods, "_voted_curve", lambda *args: None)
        old = run()
    for key in ("keep_ratio", "ties"):
        assert new.meta[key] == old.meta[key]
    assert new.meta["ties"] == ("broken" if sparsity == 50.0 else "kept")
    new_masks, old_masks = new.masks, old.masks
    assert list(new_masks) == list(old_masks)
    assert all(torch.equal(new_masks[n], old_masks[n]) for n in new_masks)
