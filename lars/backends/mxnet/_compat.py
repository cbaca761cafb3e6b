"""The private MXNet APIs `OneLARS` needs, only here: each use checked on mxnet 1.9.1 (the last
release); tests/mxnet/test_mxnet_compat.py fails if MXNet changes one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mxnet as mx
from mxnet import gluon


class Optimizer(mx.optimizer.Optimizer):
    """MXNet's optimizer base class, its protected members under public names."""

    def count(self, indices: Sequence[int]) -> bool:
        """Counts an update of `indices` (`num_update`); whether it begins this device's step."""
        # mxnet 1.9.1: `_update_count` advances `num_update` and `_index_update_count`, the count
        # per index (from `begin_num_update`) of the device `Updater` last gave `_set_current_context`.
        counts = self._index_update_count
        before = max(counts.values(), default=self.begin_num_update)
        self._update_count(list(indices))
        return bool(max(counts.values()) > before)

    def counts(self) -> tuple[dict[int, int], int]:
        """The current device's counts, which `restore_counts` puts back."""
        return dict(self._index_update_count), self.num_update

    def restore_counts(self, counts: tuple[dict[int, int], int]) -> None:
        # mxnet 1.9.1: `_index_update_count` is the current device's dict of `_all_index_update_counts`
        # (see `set_counts`): changed in place.
        self._index_update_count.clear()
        self._index_update_count.update(counts[0])
        self.num_update = counts[1]

    def lrs_and_wds(self, indices: Sequence[int]) -> tuple[list[float], list[float]]:
        # mxnet 1.9.1: `_get_lrs` (the scheduler at `num_update`, lr_mult), `_get_wds` (wd_mult).
        return list(self._get_lrs(list(indices))), list(self._get_wds(list(indices)))

    def set_counts(self, device_id: int, count: int, indices: Sequence[int]) -> None:
        # mxnet 1.9.1: `_all_index_update_counts` holds each device's counts (the current device's
        # is `_index_update_count`, the same dict: changed in place).
        counts = self._all_index_update_counts.setdefault(device_id, {})
        counts.clear()
        counts.update(dict.fromkeys(indices, count))
        self.num_update = count


def updaters(target: Any, names: Mapping[int, str] | None = None, weights: Mapping[int, Any] | None = None
             ) -> list[tuple[Any, Mapping[int, str], Mapping[int, Any]]]:
    """`(updater, names, weights)` by index: a `gluon.Trainer`'s, one per context, or an MXNet
    `Updater` with the names and weights given."""
    if not isinstance(target, gluon.Trainer):
        return [(target, names or {}, weights or {})]
    # mxnet 1.9.1: a Trainer's `_params` in index order, its `_updaters` one per context in
    # `list_data()`'s order, unused if `_update_on_kvstore` runs the optimizer in the kvstore.
    if target._update_on_kvstore:
        raise ValueError("the optimizer's states are in the kvstore (update_on_kvstore=True): use "
                         "Trainer.save_states and Trainer.load_states")
    names = {i: p.name for i, p in enumerate(target._params)}
    return [(u, names, {i: p.list_data()[k] for i, p in enumerate(target._params) if p.grad_req != "null"})
            for k, u in enumerate(target._updaters)]


def held(updater: Any) -> tuple[Any, dict[Any, Any]]:
    """An MXNet `Updater`'s optimizer and its states by index (made on first use)."""
    return updater.optimizer, dict(updater.states)  # mxnet 1.9.1: public, but undocumented


def set_states(updater: Any, new: dict[Any, Any]) -> None:
    updater.states, updater.states_synced = new, dict.fromkeys(new, True)  # mxnet 1.9.1: on their device
