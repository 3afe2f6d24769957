"""Token datasets over cache files, for pretraining, fine-tuning and evaluation.

Sampling is a pure function of (seed, epoch, slot) in train mode and of (path, eval_seed,
view) in eval mode, so a run that is killed and resumed sees exactly the same batches as an
uninterrupted one, whatever the number of DataLoader workers. (The original drew train
samples from the global numpy RNG; eval-mode seeding matches it: md5(path) + eval_seed +
1000003 * view.)
"""

from __future__ import annotations

import glob
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nepa3d.backends import VoxelConfig, get_pools, read_backend_arrays
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.utils.seeding import path_seed


def cache_files(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted ``<root>/<split>/*/*.npz`` (the literal glob strings: they key eval seeds)."""
    return sorted(glob.glob(os.path.join(str(root), split, "*", "*.npz")))


def class_of(path: str) -> str:
    return Path(path).parent.name


#: Files whose arrays a dataset keeps in memory by default (per process).
MEMORY_CACHE_FILES = 512


class _ArrayCache:
    """Small LRU of the arrays a backend reads from a file (only those keys), so a file that is
    sampled again soon is not read again; ``max_items=0`` turns it off (every sample reads its
    file: the lazy reader decompresses only the backend's keys and checks the schema once)."""

    def __init__(self, max_items: int = MEMORY_CACHE_FILES, store: str | None = None):
        self.max_items = max(0, int(max_items))
        self.store = store or None
        self._d: OrderedDict[tuple[str, str], dict] = OrderedDict()

    def get(self, path: str, backend: str) -> dict:
        if self.max_items == 0:
            return read_backend_arrays(backend, path, self.store)
        key = (path, backend)
        a = self._d.get(key)
        if a is None:
            a = read_backend_arrays(backend, path, self.store)
            self._d[key] = a
            if len(self._d) > self.max_items:
                self._d.popitem(last=False)
        else:
            self._d.move_to_end(key)
        return a


@dataclass(frozen=True)
class Item:
    path: str
    backend: str
    label: int = -1
    drop_ray_prob: float | None = None
    force_missing_ray: bool = False
    voxel: VoxelConfig | None = None   # settings of the ``voxel`` backend (None = defaults)


def train_key(seed: int, epoch: int, slot: int) -> np.ndarray:
    """The seed array of train slot ``slot`` of epoch ``epoch``."""
    return np.array([seed & 0xFFFFFFFF, epoch, slot, 0x5EED], dtype=np.uint32)


def train_rng(seed: int, epoch: int, slot: int) -> np.random.RandomState:
    return np.random.RandomState(train_key(seed, epoch, slot))


class TokenDataset(Dataset):
    """Items -> (feat, type_id, label).

    train mode: ``set_epoch(e)`` fixes the epoch plan (``plan_fn(epoch) -> item indices``);
    slot s of epoch e uses RandomState([seed, e, s]).
    eval mode: slot i is item i; K = mc_k views, view k seeded by md5(path)+eval_seed+1000003k;
    feat is (K, T, 15) when K > 1.
    Reading: each sample reads only its backend's keys (:func:`nepa3d.backends.backend_keys`);
    ``cache_items`` files' arrays are kept in memory (0: none); ``loader_store``: a folder where
    each file is decompressed once (:mod:`nepa3d.data.loader_store`), None: inflate per read.
    """

    def __init__(self, items: list[Item], tok: TokenizerConfig, *, mode: str = "train",
                 seed: int = 0, eval_seed: int = 0, mc_k: int = 1, plan_fn=None,
                 cache_items: int = MEMORY_CACHE_FILES, loader_store: str | None = None):
        assert mode in ("train", "eval")
        if not items:
            raise ValueError("dataset has no items (empty cache split?)")
        self.items = items
        self.tok = tok
        self.mode = mode
        self.seed = seed
        self.eval_seed = eval_seed
        self.mc_k = max(1, int(mc_k))
        self.plan_fn = plan_fn or (lambda ep: np.random.RandomState(
            (seed * 1000003 + ep) & 0xFFFFFFFF).permutation(len(items)))
        self.epoch = 0
        self.plan = self.plan_fn(0) if mode == "train" else np.arange(len(items))
        self._cache = _ArrayCache(cache_items, loader_store)
        # Re-seeded for every sample: the same stream as a fresh RandomState(key), 20x cheaper
        # than building one (a DataLoader worker process owns its copy).
        self._rng = np.random.RandomState()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.mode == "train":
            self.plan = np.asarray(self.plan_fn(epoch))

    def set_sizes(self, n_point: int, n_ray: int) -> None:
        self.tok = replace(self.tok, n_point=n_point, n_ray=n_ray)

    def __len__(self) -> int:
        return len(self.plan)

    def _tokens(self, item: Item, rng: np.random.RandomState, drop: float):
        pools = get_pools(item.backend, item.path, self._cache.get(item.path, item.backend), item.voxel)
        avail = pools["ray_available"] and not item.force_missing_ray
        cfg = replace(self.tok, drop_ray_prob=drop)
        return build_sequence(pools, cfg, rng, ray_available=avail)

    def __getitem__(self, slot: int):
        item = self.items[int(self.plan[slot])]
        rng = self._rng
        if self.mode == "train":
            drop = self.tok.drop_ray_prob if item.drop_ray_prob is None else item.drop_ray_prob
            rng.seed(train_key(self.seed, self.epoch, slot))
            feat, types = self._tokens(item, rng, drop)
        else:
            views = []
            for k in range(self.mc_k):
                rng.seed(path_seed(item.path, self.eval_seed, k))
                views.append(self._tokens(item, rng, 0.0))
            feat = np.stack([v[0] for v in views]) if self.mc_k > 1 else views[0][0]
            types = np.stack([v[1] for v in views]) if self.mc_k > 1 else views[0][1]
        return torch.from_numpy(feat), torch.from_numpy(types), item.label


def collate(batch):
    feats, types, labels = zip(*batch)
    return torch.stack(feats), torch.stack(types), torch.tensor(labels, dtype=torch.long)
