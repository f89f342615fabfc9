"""Ranking scores into masks by selection: the k-th largest score in linear time.

A top-k mask needs one order statistic, not a sorted copy. Float32 scores are read as int32
*order keys* (a non-negative float's bit pattern orders like the float; negative floats are
folded below zero), and the k-th largest key is found by a radix select: a histogram of the high
16 bits finds the bin that holds it, a histogram of the low 16 bits of that bin's entries finds
the key. Two histogram passes instead of a sort, and the very threshold a descending sort gives,
so the masks are bit for bit the ones of ``sort(descending=True).values[k - 1]``.

    ScoreRanking           top-k masks of one score set for any keep ratio: ties kept (the
                           reference's rule), or broken by a tie-break then position (``exact``)
    topk_mask, task_masks  the one-shot forms (global top-k; per-task normalised top-k)
    check_keep_ratio       what a keep ratio may be: (0, 1], ``int(n * keep)`` entries kept
    VotedSparsityCurve     deployed sparsity of vote-fused per-task masks by keep ratio, counted
                           without building masks (what the target-sparsity search bisects)
    SortedRanking          the plain sort this module replaces: the oracle of tests and benchmarks
"""
from __future__ import annotations

import sys
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch

from lib.masks import Masks

from .errors import KeepsNoWeightError
from .sparsity import SparsityCurve

_DIGIT = 16                   # bits resolved per histogram pass
_BINS = 1 << _DIGIT
_SIGNED_OFFSET = 1 << (_DIGIT - 1)
_NAN_KEY = 0x7F800000          # keys above this (or below its negative) are NaNs


def check_keep_ratio(keep_ratio: float) -> float:
    """Return ``keep_ratio`` as float if it lies in (0, 1], else raise a one-line ValueError."""
    try:
        value = float(keep_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return value


def order_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys of float32 ``values`` that order like the values (-0.0 and 0.0 share a key).

    Non-negative scores (every score in this package) are returned as a view, without a copy.
    """
    bits = values.contiguous().view(torch.int32)
    if bits.numel() and int(bits.min()) < 0:  # sign bits set: fold negative floats below zero
        bits = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return bits


def key_value(key: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The float32 (0-dim tensor) whose order key is ``key``; inverse of :func:`order_keys`."""
    bits = key if key >= 0 else -key - (1 << 31)  # magnitude bits with the sign bit, as int32
    return torch.tensor(bits, dtype=torch.int32, device=device).view(torch.float32)


def _has_nan(keys: torch.Tensor) -> bool:
    low, high = torch.aminmax(keys)
    return int(high) > _NAN_KEY or int(low) < -_NAN_KEY


def high_digits(keys: torch.Tensor, signed: bool) -> torch.Tensor:
    """The keys' high 16 bits as integers in [0, 2**16) (``signed``: some keys are negative).

    Non-negative keys give a strided int16 view of their high halves, without a pass.
    """
    if not signed and sys.byteorder == "little":
        return keys.view(torch.int16)[1::2]
    high = keys >> _DIGIT
    return high + _SIGNED_OFFSET if signed else high


def _bin_from_top(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest entry (1-based) and how many entries lie above it."""
    from_top = hist.flip(0).cumsum(0)
    i = int(torch.searchsorted(from_top, k))
    b = hist.numel() - 1 - i
    return b, int(from_top[i]) - int(hist[b])


def _low_histogram(keys: torch.Tensor, digits: torch.Tensor, b: int) -> torch.Tensor:
    """Counts of the low 16 bits of the keys whose high digit is ``b``."""
    return torch.bincount(keys[digits == b] & (_BINS - 1), minlength=_BINS)


def _resolve(high_hist: torch.Tensor, low_hist_of, k: int, signed: bool) -> tuple[int, int, int]:
    b, above = _bin_from_top(high_hist, k)
    low_hist = low_hist_of(b)
    b2, above2 = _bin_from_top(low_hist, k - above)
    high = b - _SIGNED_OFFSET if signed else b
    return (high << _DIGIT) | b2, above + above2, int(low_hist[b2])


def kth_largest(keys: torch.Tensor, k: int, signed: bool) -> tuple[int, int, int]:
    """The k-th largest (1-based) of the int32 ``keys``: ``(key, #larger, #equal)``.

    A radix select: one histogram pass over the high 16 bits, one over the low 16 bits of the
    entries in the bin that holds the answer.
    """
    if not 1 <= k <= keys.numel():
        raise ValueError(f"rank {k} outside 1..{keys.numel()}")
    digits = high_digits(keys, signed)
    return _resolve(torch.bincount(digits, minlength=_BINS),
                    lambda b: _low_histogram(keys, digits, b), k, signed)


class Cut(NamedTuple):
    """The k-th entry of a ranking; a mask keeps every entry ranked at or above it.

    ``key``: its score's order key. ``position`` (flat position) is None when ties at ``key``
    are kept; otherwise ties are broken by ``tie_key`` (None without a tie-break), then
    position. ``kept``: how many entries of the ranking the cut keeps.
    """
    key: int
    tie_key: int | None
    position: int | None
    kept: int


class _Plateau(NamedTuple):
    """A long run of entries with one key: how many entries rank above it, and its flat
    positions in tie order (tie-break key descending, then position ascending)."""
    above: int
    order: torch.Tensor


class _Window(NamedTuple):
    """The entries whose high digit lies in [low, high]: their keys, digits and (for broken
    ties) flat positions."""
    low: int
    high: int
    keys: torch.Tensor
    digits: torch.Tensor
    positions: torch.Tensor | None


class ScoreRanking:
    """Scores ranked once, so masks for many keep ratios (the sparsity search) are cheap.

    ``masks(keep_ratio)`` keeps the top ``int(n * keep_ratio)`` of all scores together, ties at
    the threshold kept. With ``normalise`` the scores are divided by their sum first, exactly
    as the reference does before thresholding (so its tie behaviour is reproduced bit for bit).

    ``masks(keep_ratio, exact=True)`` keeps exactly ``int(n * keep_ratio)``: ties are broken by
    ``tie_break`` (larger first, e.g. ``|w|``), then by position. Needed where many scores tie
    (exact zeros: dead ReLUs, dilated taps that only see padding) and a target sparsity must be
    met; the reference's keep-ties rule stays the default. ``leading``: the first layers of
    ``scores`` (the shared ones, for :class:`VotedSparsityCurve`) whose bin counts are kept
    apart as ``leading_hist``.

    The threshold is the k-th largest score found by selection (:func:`kth_largest`), in time
    linear in the number of scores; the masks equal those of a full sort (:class:`SortedRanking`).
    The high-digit histogram is built once and each visited bin's low-digit histogram is kept;
    a search that brackets the cut (:meth:`focus`) keeps the entries inside the bracket at
    hand, so its later cuts cost passes over those only. ``tie_break`` is only read where
    scores tie at the threshold.
    """
    CACHED_BINS = 8
    # Runs of equal scores at least this long are sorted in tie order on their second cut.
    PLATEAU_SORT_MIN = 1 << 16
    CACHED_PLATEAUS = 2

    def __init__(self, scores: Mapping[str, torch.Tensor], normalise: bool = True,
                 label: str = "scores", tie_break: Mapping[str, torch.Tensor] | None = None,
                 leading: Sequence[str] = ()):
        if not scores:
            raise ValueError(f"{label}: no scores to threshold")
        self.label = label
        detached = {n: s.detach().float() for n, s in scores.items()}
        flat = torch.cat([s.flatten() for s in detached.values()])
        if normalise:
            norm = flat.sum()
            if not torch.isfinite(norm) or norm <= 0:
                raise ValueError(f"{label}: importance scores sum to {norm.item()}, cannot "
                                 f"normalise (all gradients zero or non-finite?)")
            flat.div_(norm)
        self.numel = flat.numel()
        self.names = list(detached)
        self.sizes = [s.numel() for s in detached.values()]
        self.values = flat
        self.scores, start = {}, 0
        for name, s in detached.items():
            self.scores[name] = flat[start:start + s.numel()].view(s.shape)
            start += s.numel()
        self.keys = order_keys(flat)
        if not normalise and _has_nan(self.keys):
            raise ValueError(f"{label}: scores contain NaN, cannot rank them")
        self.signed = int(self.keys.min()) < 0
        self._digits = high_digits(self.keys, self.signed)
        # the leading layers' bin counts kept apart, at no extra cost: the high-digit histogram
        # is theirs plus the rest's
        self.leading = list(leading)
        if self.names[:len(self.leading)] != self.leading:
            raise ValueError(f"{label}: leading layers {self.leading[:2]}... do not open the "
                             f"scores {self.names[:2]}...")
        split = sum(self.sizes[:len(self.leading)])
        self.leading_hist = torch.bincount(self._digits[:split], minlength=_BINS)
        self._high_hist = self.leading_hist + torch.bincount(self._digits[split:], minlength=_BINS)
        self._low_hists: dict[int, torch.Tensor] = {}
        self._window: _Window | None = None
        self._focus: tuple[int, int, bool, int] | None = None  # digits, exact, full passes
        self._tie_break = tie_break
        self._tie_keys: torch.Tensor | None = None
        self._cuts: dict[tuple[int, bool], Cut] = {}
        self._plateaus: dict[int, _Plateau] = {}
        self._plateau_visits: dict[int, int] = {}

    def num_keep(self, keep_ratio: float) -> int:
        """``int(n * keep_ratio)``; a KeepsNoWeightError when that is 0."""
        keep_ratio = check_keep_ratio(keep_ratio)
        num_keep = int(self.numel * keep_ratio)
        if num_keep < 1:
            raise KeepsNoWeightError(f"{self.label}: keep_ratio {keep_ratio} keeps no weight of "
                                     f"{self.numel}")
        return num_keep

    def threshold(self, keep_ratio: float) -> torch.Tensor:
        """The ``int(n * keep_ratio)``-th largest (normalised) score, as a 0-dim tensor."""
        return key_value(self.cut(self.num_keep(keep_ratio)).key, self.values.device)

    def masks(self, keep_ratio: float, exact: bool = False) -> Masks:
        cut = self.cut(self.num_keep(keep_ratio), exact)
        if not exact:
            threshold = key_value(cut.key, self.values.device)
            return {name: s >= threshold for name, s in self.scores.items()}
        keep = self.member(cut, self.keys, 0)
        return {name: keep[start:start + s.numel()].view(s.shape)
                for (name, s), start in zip(self.scores.items(), self._starts())}

    def cut(self, num_keep: int, exact: bool = False) -> Cut:
        """The ``num_keep``-th entry of the ranking (ties broken with ``exact``)."""
        if (num_keep, exact) not in self._cuts:
            self._cuts[(num_keep, exact)] = self._select(num_keep, exact)
        return self._cuts[(num_keep, exact)]

    def focus(self, upper: int | None, lower: int | None, exact: bool = False) -> None:
        """Later cuts will have keys in [``lower``, ``upper``] (None: no bound that side);
        ``exact``: they will break ties. Once a second pass over all entries would be needed
        inside that bracket, its entries are gathered and later cuts look at those only."""
        low = 0 if lower is None else self._digit(lower)
        high = self._digit(_NAN_KEY) if upper is None else self._digit(upper)
        if self._focus is None or self._focus[:3] != (low, high, exact):
            self._focus = (low, high, exact, 0)

    def member(self, cut: Cut, keys: torch.Tensor, positions: torch.Tensor | int) -> torch.Tensor:
        """Which of the entries with order ``keys`` at flat ``positions`` (a tensor, or the
        offset of a contiguous run) ``cut`` keeps, as a bool tensor shaped like ``keys``."""
        if cut.position is None:
            return keys >= cut.key
        kept = keys > cut.key
        plateau = self._plateaus.get(cut.key)
        if (plateau is not None and isinstance(positions, int) and positions == 0
                and keys.data_ptr() == self.keys.data_ptr()):   # all entries, or the first ones
            winners = plateau.order[:cut.kept - plateau.above]
            if keys.numel() < self.numel:
                winners = winners[winners < keys.numel()]
            kept[winners] = True
            return kept
        tied = (keys == cut.key).nonzero().squeeze(1)
        if tied.numel():
            at = tied + positions if isinstance(positions, int) else positions[tied]
            kept[tied[self._wins_tie(at, cut)]] = True
        return kept

    # ------------------------------------------------------------------------------ internals
    def _starts(self) -> list[int]:
        starts, start = [], 0
        for size in self.sizes:
            starts.append(start)
            start += size
        return starts

    def _digit(self, key: int) -> int:
        return (key >> _DIGIT) + (_SIGNED_OFFSET if self.signed else 0)

    def _first_key(self, digit: int) -> int:
        """The smallest key whose high digit is ``digit``."""
        return (digit - (_SIGNED_OFFSET if self.signed else 0)) << _DIGIT

    def _select(self, num_keep: int, exact: bool) -> Cut:
        if num_keep == self.numel and not exact:  # everything: the smallest key
            return Cut(int(self.keys.min()), None, None, self.numel)
        key, above, equal = _resolve(self._high_hist, self._low_hist, num_keep, self.signed)
        if not exact:
            return Cut(key, None, None, above + equal)
        rank = num_keep - above
        plateau = self._plateaus.get(key)
        if plateau is not None:    # this plateau's tie order is known: the rank-th of it
            at = plateau.order[rank - 1:rank]
            tie_key = None if self._tie_break is None else int(self._tie_keys_at(at)[0])
            return Cut(key, tie_key, int(at[0]), num_keep)
        window = self._window_for(self._digit(key))
        if window is None or window.positions is None:
            positions = (self.keys == key).nonzero().squeeze(1)
        else:
            positions = window.positions[window.keys == key]
        if self._remember_plateau(key, above, equal, positions):
            return self._select(num_keep, exact)
        tie_key = None
        if self._tie_break is not None:
            tie_keys = self._tie_keys_at(positions)
            tie_key, above_tie, _ = kth_largest(tie_keys, rank, signed=True)
            positions = positions[tie_keys == tie_key]
            rank -= above_tie
        return Cut(key, tie_key, int(positions[rank - 1]), num_keep)

    def _remember_plateau(self, key: int, above: int, size: int, positions: torch.Tensor) -> bool:
        """On the second tie-broken cut inside one large run of equal scores (``size``
        entries at ``positions``, ascending; ``above`` entries rank higher), sort the run once
        in tie order (tie-break larger first, then position), so this and later cuts in it
        are a lookup; whether it was sorted now. A search on a plateau of tied scores cuts it
        again and again."""
        if size < self.PLATEAU_SORT_MIN or positions.numel() != size:
            return False
        self._plateau_visits[key] = self._plateau_visits.get(key, 0) + 1
        if self._plateau_visits[key] < 2:
            return False
        if self._tie_break is not None:
            # ~key orders like -key without overflow; an ascending stable sort (a radix sort
            # for integers, 3x a descending one here) keeps equal tie keys in position order
            by_tie = torch.sort(~self._tie_keys_at(positions), stable=True).indices
            positions = positions[by_tie]
        if self.numel < 2 ** 31:   # half the memory of int64 positions (tens of millions)
            positions = positions.int()
        if len(self._plateaus) >= self.CACHED_PLATEAUS:
            self._plateaus.pop(next(iter(self._plateaus)))
        self._plateaus[key] = _Plateau(above, positions)
        return True

    def _window_for(self, b: int) -> _Window | None:
        """The gathered entries covering high digit ``b``, gathering them when that pays."""
        window, focus = self._window, self._focus
        exact = focus is not None and focus[2]
        if (window is not None and window.low <= b <= window.high and
                (window.positions is not None or not exact)):
            return window
        if focus is None or not focus[0] <= b <= focus[1]:
            return None
        low, high, exact, full_passes = focus
        self._focus = (low, high, exact, full_passes + 1)
        if window is not None and not (window.low <= low <= high <= window.high and
                                       (window.positions is not None or not exact)):
            window = None  # left from an earlier search: start from all entries
        count = int(self._high_hist[low:high + 1].sum())
        if full_passes < 1 or 8 * count > (self.numel if window is None else window.keys.numel()):
            return None  # one pass over everything costs less than gathering
        keys = self.keys if window is None else window.keys
        inside = keys >= self._first_key(low)
        if high < self._digit(_NAN_KEY):
            inside &= keys < self._first_key(high + 1)
        positions = None
        if exact:
            local = inside.nonzero().squeeze(1)
            positions = local if window is None else window.positions[local]
        keys = keys[inside]
        self._window = _Window(low, high, keys, high_digits(keys, self.signed), positions)
        return self._window

    def _low_hist(self, b: int) -> torch.Tensor:
        if b not in self._low_hists:
            if len(self._low_hists) >= self.CACHED_BINS:
                self._low_hists.pop(next(iter(self._low_hists)))
            window = self._window_for(b)
            self._low_hists[b] = (_low_histogram(self.keys, self._digits, b) if window is None
                                  else _low_histogram(window.keys, window.digits, b))
        return self._low_hists[b]

    def _wins_tie(self, positions: torch.Tensor, cut: Cut) -> torch.Tensor:
        """Among entries whose score ties ``cut``'s: which ``cut`` keeps."""
        if cut.tie_key is None:
            return positions <= cut.position
        tie_keys = self._tie_keys_at(positions)
        return (tie_keys > cut.tie_key) | ((tie_keys == cut.tie_key) & (positions <= cut.position))

    def _tie_keys_at(self, positions: torch.Tensor) -> torch.Tensor:
        if self._tie_keys is None:
            values = torch.cat([self._tie_break[n].detach().flatten().float().to(self.values.device)
                                for n in self.names])
            # a descending sort ranks every NaN first, as equals: one key for all of them
            values = torch.where(torch.isnan(values), float("nan"), values)
            self._tie_keys = order_keys(values)
        return self._tie_keys[positions]


def topk_mask(scores: Mapping[str, torch.Tensor], keep_ratio: float, normalise: bool = True,
              label: str = "scores") -> Masks:
    """Keep the top ``int(n * keep_ratio)`` of all scores together; ties at the threshold are kept.

    With ``normalise`` the scores are divided by their sum first (the reference's order of
    operations). For many keep ratios over the same scores use :class:`ScoreRanking`.
    """
    check_keep_ratio(keep_ratio)
    return ScoreRanking(scores, normalise, label).masks(keep_ratio)


def task_masks(scores: Mapping[str, Mapping[str, torch.Tensor]],
               keep_ratio: float) -> dict[str, Masks]:
    """Per task: normalise its scores by their sum and keep its top ``int(n * keep_ratio)``.

    ``scores`` is ``{task: {module name: score}}`` over each task model (backbone + own head),
    as :func:`lib.pruning.task_scores` returns; so is the result, with bool masks.
    """
    return {task: topk_mask(s, keep_ratio, normalise=True, label=f"task {task!r}")
            for task, s in scores.items()}


class _Mark(NamedTuple):
    """What one task's cut at one keep ratio says of an entry with order key K: kept if
    K >= ``sure``, possibly kept if K >= ``possible``; no cut key in between exceeds ``top``."""
    sure: int
    possible: int
    top: int


class VotedSparsityCurve(SparsityCurve):
    """Deployed sparsity of per-task top-k masks fused by votes, counted without building masks.

    ``rankings`` (one per task) each cover the ``shared`` layers first, in that order, then
    their task's own layers. A shared weight is kept when at least ``need`` tasks keep it, an
    own weight when its task does; zero ``weights`` count as dropped whatever the masks say
    (as :func:`lib.pruning.mask_sparsity` counts them). ``exact`` breaks ties as
    ``ScoreRanking.masks(keep, exact=True)`` does. ``at(keep)`` equals the sparsity of the
    fused masks to the bit.

    ``intervals(keep)`` needs no cut, only the histogram bin each task's cut falls in (entries
    of higher bins are kept, of lower bins dropped): first from per-task histograms of the
    shared weights alone, by counting (an entry with ``need`` votes has a vote in any
    ``T - need + 1`` tasks; the votes add up to what the tasks keep), then from one pass of
    comparisons. Between the search's bounds lo < hi a weight can change its fate only if some
    task ranks it between its cuts at hi and at lo: once that halves the shared weights looked
    at, only those are looked at again. Own weights are counted as what their task keeps in
    all minus what it keeps among the shared weights (and among its zero own weights).
    """

    def __init__(self, rankings: Mapping[str, ScoreRanking], shared: Sequence[str], need: int,
                 weights: Mapping[str, torch.Tensor], exact: bool = False):
        self.rankings = list(rankings.values())
        self.need, self.exact = need, exact
        shared = list(shared)
        for task, ranking in rankings.items():
            if ranking.names[:len(shared)] != shared:
                raise ValueError(f"task {task!r}: its ranking does not start with the shared "
                                 f"layers {shared[:2]}...")
        first = self.rankings[0]
        self.num_shared = sum(first.sizes[:len(shared)])
        self.total = self.num_shared + sum(r.numel - self.num_shared for r in self.rankings)
        zeros = {n: w.numel() - int(torch.count_nonzero(w)) for n, w in weights.items()}
        self._zero_shared = sum(zeros[n] for n in shared)
        # which shared weights are nonzero; None: all of them (no mask to apply)
        self._all_nonzero = (torch.cat([weights[n].detach().flatten() != 0 for n in shared])
                             if self._zero_shared else None)
        self._zero_own = [self._zero_entries(r, len(shared), weights, zeros)
                          for r in self.rankings]
        # per task: how many shared entries have a high digit >= d, for every digit d
        self._shared_from = []
        for r in self.rankings:
            hist = r.leading_hist if r.leading == shared else torch.bincount(
                r._digits[:self.num_shared], minlength=_BINS)
            from_top = torch.cat([hist.flip(0).cumsum(0).flip(0), hist.new_zeros(1)])
            self._shared_from.append(from_top.tolist())
        self._reset()

    def at(self, keep: float) -> float:
        self._enter(keep)
        return self._exact_value(keep)

    def intervals(self, keep: float) -> Iterator[tuple[float, float]]:
        self._enter(keep)
        num_keep = [r.num_keep(keep) for r in self.rankings]
        if num_keep == [r.numel for r in self.rankings] and self.need <= len(num_keep):
            self._last = None  # every weight kept: only the zero ones count as dropped
            zeros = self._zero_shared + sum(z.numel() for z, _ in self._zero_own)
            yield self._percent(self.total - zeros, self.total - zeros)
            return
        marks, kept = zip(*(self._bin_mark(r, m) for r, m in zip(self.rankings, num_keep)))
        if self._entries is None:
            yield self._from_histograms(keep, marks, kept)
        yield self._from_one_pass(keep, marks, kept)
        yield (self._exact_value(keep),) * 2

    def restart(self) -> None:
        self._reset()

    def narrow(self, lo: float, hi: float) -> None:
        if self._last is None or self._last[0] not in (lo, hi):
            return
        keep, marks, sure, possible = self._last
        self._last = None
        moved = "lo" if keep == lo else "hi"
        self._marks[moved] = marks
        self._bracket = (lo, hi)
        for j, ranking in enumerate(self.rankings):
            upper, lower = self._marks["lo"], self._marks["hi"]
            ranking.focus(upper and upper[j].top, lower and lower[j].possible, self.exact)
        if possible is None:
            return  # known from the histograms alone: nothing to gather by
        keys = self._entry_keys()
        if moved == "lo" and sure is None:
            sure = [k >= mark.sure for k, mark in zip(keys, marks)]
            sure.append(self._fuse(sure))
        # entries decided for the bracket keep the fate they had at its bound just set: the
        # sure one at lo, the possible one at hi
        fate = sure if moved == "lo" else possible
        undecided = self._between_marks(keys[0], 0, fate, moved)
        for j in range(1, len(keys)):
            undecided |= self._between_marks(keys[j], j, fate, moved)
        if 2 * int(torch.count_nonzero(undecided)) > undecided.numel():
            return  # gathering the open ones would cost more than it saves
        decided = ~undecided
        self._kept_fused += int(torch.count_nonzero(fate[-1] & decided))
        self._kept_single = [k + int(torch.count_nonzero(f & decided))
                             for k, f in zip(self._kept_single, fate[:-1])]
        local = undecided.nonzero().squeeze(1)
        self._entries = local if self._entries is None else self._entries[local]
        self._keys = [k[local] for k in keys]
        self._nonzero = None if self._nonzero is None else self._nonzero[local]

    # ------------------------------------------------------------------------------ internals
    def _reset(self) -> None:
        """Look at every shared weight again (the state for the bracket [0, 1])."""
        self._entries: torch.Tensor | None = None  # shared weights looked at: None = all
        self._keys: list[torch.Tensor] | None = None
        self._nonzero = self._all_nonzero
        self._kept_fused = 0                         # kept, among the weights not looked at
        self._kept_single = [0] * len(self.rankings)
        self._bracket = (0.0, 1.0)
        self._marks: dict[str, list[_Mark] | None] = {"lo": None, "hi": None}
        self._last: tuple | None = None

    def _enter(self, keep: float) -> None:
        if not self._bracket[0] <= keep <= self._bracket[1]:
            self._reset()  # asked outside the bracket: every weight may matter again

    def _percent(self, kept_low: int, kept_high: int) -> tuple[float, float]:
        # the very expression mask_sparsity evaluates, so the values agree to the bit
        return (100.0 * (self.total - kept_high) / max(self.total, 1),
                100.0 * (self.total - kept_low) / max(self.total, 1))

    def _from_histograms(self, keep, marks, kept) -> tuple[float, float]:
        """Bounds from each task's bin counts over the shared weights, without a pass."""
        tasks, need, n = len(self.rankings), self.need, self.num_shared
        sure = [self._shared_at_or_above(j, mark.sure) for j, mark in enumerate(marks)]
        possible = [self._shared_at_or_above(j, mark.possible) for j, mark in enumerate(marks)]
        if need > tasks:
            fused_low = fused_high = 0
        else:
            # an entry short of need votes holds at most need - 1 of the votes cast, one with
            # need votes at most all; and it has a vote in any tasks - need + 1 of the tasks
            spare = tasks - need + 1
            fused_low = max(0, -(-(sum(sure) - (need - 1) * n) // spare))  # ceiling division
            if need == 1:
                fused_low = max(fused_low, *sure)
            fused_low = max(0, fused_low - self._zero_shared)  # zero weights: never kept
            fused_high = min(n - self._zero_shared, sum(sorted(possible)[:spare]))
        own_low, own_high = self._own_bounds(marks, kept)
        self._last = (keep, marks, None, None)
        return self._percent(fused_low + own_low, fused_high + own_high)

    def _from_one_pass(self, keep, marks, kept) -> tuple[float, float]:
        """Bounds from comparing every shared weight looked at with the cuts' bins: which the
        vote may keep; those surely kept differ by at most the entries in the cuts' bins."""
        keys = self._entry_keys()
        possible = [k >= mark.possible for k, mark in zip(keys, marks)]
        possible.append(self._fuse(possible))
        high = self._kept_fused + int(torch.count_nonzero(possible[-1]))
        in_cut_bins = sum(self._shared_at_or_above(j, mark.possible) -
                          self._shared_at_or_above(j, mark.sure) for j, mark in enumerate(marks))
        low = max(self._kept_fused, high - in_cut_bins)
        own_low, own_high = self._own_bounds(marks, kept)
        self._last = (keep, marks, None, possible)
        return self._percent(low + own_low, high + own_high)

    def _own_bounds(self, marks, kept) -> tuple[int, int]:
        """How many of their own nonzero weights the tasks keep at least / at most: all their
        entries at or above the cut's bin, less the shared and the zero ones, by bin counts."""
        low = high = 0
        for j, (mark, (at_least, at_most)) in enumerate(zip(marks, kept)):
            zero_sure, zero_possible = self._zero_own_kept(j, mark)
            low += at_least - self._shared_at_or_above(j, mark.sure) - zero_sure
            high += at_most - self._shared_at_or_above(j, mark.possible) - zero_possible
        return low, high

    def _shared_at_or_above(self, j: int, key: int) -> int:
        """How many shared entries of task ``j`` have a high digit at or above ``key``'s."""
        return self._shared_from[j][self.rankings[j]._digit(key)]

    def _exact_value(self, keep: float) -> float:
        cuts = [r.cut(r.num_keep(keep), self.exact) for r in self.rankings]
        keys = self._entry_keys()
        positions = 0 if self._entries is None else self._entries
        singles = [r.member(c, k, positions) for r, c, k in zip(self.rankings, cuts, keys)]
        singles.append(self._fuse(singles))
        kept = self._kept_fused + int(torch.count_nonzero(singles[-1]))
        for j, (r, cut) in enumerate(zip(self.rankings, cuts)):
            z_keys, z_positions = self._zero_own[j]
            zero_kept = int(torch.count_nonzero(r.member(cut, z_keys, z_positions)))
            shared_kept = self._kept_single[j] + int(torch.count_nonzero(singles[j]))
            kept += cut.kept - shared_kept - zero_kept
        self._last = (keep, [self._mark(c) for c in cuts], singles, singles)
        return self._percent(kept, kept)[0]

    def _zero_own_kept(self, j: int, mark: _Mark) -> tuple[int, int]:
        z_keys = self._zero_own[j][0]
        return (int(torch.count_nonzero(z_keys >= mark.sure)),
                int(torch.count_nonzero(z_keys >= mark.possible)))

    @staticmethod
    def _mark(cut: Cut) -> _Mark:
        if cut.position is None:
            return _Mark(cut.key, cut.key, cut.key)
        return _Mark(cut.key + 1, cut.key, cut.key)  # entries tied with it may go either way

    @staticmethod
    def _bin_mark(ranking: ScoreRanking, num_keep: int) -> tuple[_Mark, tuple[int, int]]:
        """The mark of the histogram bin holding the cut, and how many entries of the ranking
        lie above that bin / at or above it."""
        b, above = _bin_from_top(ranking._high_hist, num_keep)
        first, after = ranking._first_key(b), ranking._first_key(b + 1)
        return _Mark(after, first, after - 1), (above, above + int(ranking._high_hist[b]))

    @staticmethod
    def _zero_entries(ranking: ScoreRanking, num_shared_layers: int,
                      weights: Mapping[str, torch.Tensor], zeros: Mapping[str, int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Order keys and positions of the ranking's own weights that are zero."""
        positions, start = [], sum(ranking.sizes[:num_shared_layers])
        for name, size in zip(ranking.names[num_shared_layers:],
                              ranking.sizes[num_shared_layers:]):
            if zeros[name]:
                found = (weights[name].detach().flatten() == 0).nonzero().squeeze(1)
                positions.append(found.to(ranking.keys.device) + start)
            start += size
        positions = (torch.cat(positions) if positions
                     else ranking.keys.new_zeros(0, dtype=torch.long))
        return ranking.keys[positions], positions

    def _entry_keys(self) -> list[torch.Tensor]:
        if self._keys is not None:
            return self._keys
        return [r.keys[:self.num_shared] for r in self.rankings]

    def _fuse(self, singles: list[torch.Tensor]) -> torch.Tensor:
        """Which shared weights looked at the vote keeps (zero weights never)."""
        if len(singles) == 1 and self.need <= 1:
            fused = singles[0]
        else:
            votes = singles[0].to(torch.uint8)
            for s in singles[1:]:
                votes += s
            fused = votes >= self.need
        return fused if self._nonzero is None else fused & self._nonzero

    def _between_marks(self, keys: torch.Tensor, j: int, fate: list[torch.Tensor],
                       moved: str) -> torch.Tensor:
        """Entries whose fate in task ``j`` may differ inside the bracket (``fate``: the masks
        at the bound that just ``moved``, which already hold one side of the comparison)."""
        lo, hi = self._marks["lo"], self._marks["hi"]
        if moved == "hi":  # at or above hi's possible key: the possible mask at hi
            inside = fate[j].clone()
            if lo is not None:
                inside &= keys < lo[j].sure
        else:              # below lo's sure key: outside the sure mask at lo
            inside = ~fate[j]
            if hi is not None:
                inside &= keys >= hi[j].possible
        return inside


class SortedRanking:
    """The plain sort :class:`ScoreRanking` replaced, kept as its oracle (tests, benchmarks).

    Same interface and masks: one full descending sort of all scores (ties kept), or a
    lexicographic argsort on (score, tie-break, position) for ``exact``. O(n log n). A sort
    keeps no bin counts: ``leading`` is only recorded.
    """

    def __init__(self, scores: Mapping[str, torch.Tensor], normalise: bool = True,
                 label: str = "scores", tie_break: Mapping[str, torch.Tensor] | None = None,
                 leading: Sequence[str] = ()):
        self.label, self.leading = label, list(leading)
        self.scores = {n: s.detach().float() for n, s in scores.items()}
        flat = torch.cat([s.flatten() for s in self.scores.values()])
        if normalise:
            norm = flat.sum()
            flat = flat / norm
            self.scores = {n: s / norm for n, s in self.scores.items()}
        self.ranked = flat.sort(descending=True).values
        self.numel = flat.numel()
        self._tie_break = tie_break
        self._rank: torch.Tensor | None = None

    def threshold(self, keep_ratio: float) -> torch.Tensor:
        num_keep = int(self.numel * check_keep_ratio(keep_ratio))
        if num_keep < 1:
            raise KeepsNoWeightError(f"{self.label}: keep_ratio {keep_ratio} keeps no weight")
        return self.ranked[num_keep - 1]

    def masks(self, keep_ratio: float, exact: bool = False) -> Masks:
        threshold = self.threshold(keep_ratio)
        if not exact:
            return {name: s >= threshold for name, s in self.scores.items()}
        keep = self._exact_rank() < int(self.numel * keep_ratio)
        out, start = {}, 0
        for name, s in self.scores.items():
            out[name] = keep[start:start + s.numel()].view_as(s)
            start += s.numel()
        return out

    def _exact_rank(self) -> torch.Tensor:
        """Position of every weight in a strict total order (score, then tie_break, then index)."""
        if self._rank is None:
            flat = torch.cat([s.flatten() for s in self.scores.values()])
            order = torch.arange(self.numel, device=flat.device)
            if self._tie_break is not None:
                secondary = torch.cat([self._tie_break[n].detach().flatten().float().to(flat.device)
                                       for n in self.scores])
                order = torch.argsort(secondary, descending=True, stable=True)
            order = order[torch.argsort(flat[order], descending=True, stable=True)]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(self.numel, device=flat.device)
            self._rank = rank
        return self._rank
