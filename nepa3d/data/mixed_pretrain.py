"""Mixed pretraining corpus from a YAML such as ``nepa3d/configs/shapenet_unpaired_mix.yaml``.

    mix_seed: 0
    mix_num_samples: 200000
    replacement: true
    datasets:
      - {name: shapenet_mesh, cache_root: ..., split: train_mesh, backend: mesh, weight: 0.34}

Per epoch the plan draws ``num_samples`` (dataset, file) pairs with
RandomState((seed + 1009 * epoch) & 0xFFFFFFFF): the dataset id by weight, then a uniform file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from nepa3d.backends import BACKENDS, VoxelConfig
from nepa3d.data.dataset import Item, cache_files

_OVERRIDES = ("drop_ray_prob", "force_missing_ray", "add_eos", "voxel_grid", "voxel_dilate",
              "voxel_max_steps")


class MixConfigError(ValueError):
    pass


@dataclass
class MixDataset:
    name: str
    cache_root: str
    split: str = "train"
    backend: str = "mesh"
    weight: float = 1.0
    overrides: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class MixConfig:
    datasets: list[MixDataset]
    num_samples: int | None = None
    replacement: bool = True
    seed: int = 0


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y", "on")
    return bool(v)


def load_mix_config(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> MixConfig:
    """Parse and validate; relative cache roots are taken relative to ``base_dir`` (cwd)."""
    path = Path(path)
    raw = _read_yaml_mapping(path)
    try:
        return _parse_mix_config(path, raw, base_dir)
    except (TypeError, ValueError) as e:  # a number that is none ('weight: heavy')
        if isinstance(e, MixConfigError):
            raise
        raise MixConfigError(f"{path}: {' '.join(str(e).split())}") from e


def _read_yaml_mapping(path: Path) -> dict:
    """The YAML mapping in file ``path``; MixConfigError naming it when it is missing, a folder,
    not YAML, or not a mapping."""
    if path.is_dir():
        raise MixConfigError(f"{path}: is a folder, not a mix config file")
    if not path.is_file():
        raise MixConfigError(f"{path}: mix config does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise MixConfigError(f"{path}: not a readable YAML file ({' '.join(str(e).split())})") from e
    if not isinstance(raw, dict):
        raise MixConfigError(f"{path}: must be a mapping with 'datasets', not a {type(raw).__name__}")
    return raw


def _parse_mix_config(path: Path, raw: dict, base_dir) -> MixConfig:
    entries = raw.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise MixConfigError(f"{path}: 'datasets' must be a non-empty list")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "cache_root" not in e:
            raise MixConfigError(f"{path}: datasets[{i}] needs a 'cache_root'")
        backend = e.get("backend", "mesh")
        if backend not in BACKENDS:
            raise MixConfigError(f"{path}: datasets[{i}].backend {backend!r} not in {BACKENDS}")
        known = {"name", "cache_root", "split", "backend", "weight", *_OVERRIDES}
        root = str(e["cache_root"])
        if base_dir is not None and not os.path.isabs(root):
            root = os.path.join(str(base_dir), root)
        out.append(MixDataset(name=e.get("name", f"ds{i}"), cache_root=root,
                              split=e.get("split", "train"), backend=backend,
                              weight=max(float(e.get("weight", 1.0)), 0.0),
                              overrides={k: e[k] for k in _OVERRIDES if k in e},
                              extra={k: v for k, v in e.items() if k not in known}))
    if sum(d.weight for d in out) <= 0:
        raise MixConfigError(f"{path}: dataset weights sum to 0")
    n = raw.get("mix_num_samples")
    return MixConfig(datasets=out, num_samples=int(n) if n else None,
                     replacement=_as_bool(raw.get("replacement", True)),
                     seed=int(raw.get("mix_seed", 0)))


@dataclass
class MixedCorpus:
    items: list[Item]
    offsets: list[int]      # start index of each dataset in items
    sizes: list[int]
    weights: np.ndarray     # normalised
    num_samples: int
    replacement: bool
    seed: int
    names: list[str]

    def plan(self, epoch: int) -> np.ndarray:
        """Item indices for one epoch. (num_samples,)"""
        rng = np.random.RandomState((self.seed + 1009 * epoch) & 0xFFFFFFFF)
        if not self.replacement:
            return rng.permutation(len(self.items))[: self.num_samples]
        out = np.empty(self.num_samples, dtype=np.int64)
        K = len(self.sizes)
        for s in range(self.num_samples):
            k = rng.choice(K, p=self.weights)
            out[s] = self.offsets[k] + rng.randint(0, self.sizes[k])
        return out


def build_corpus(cfg: MixConfig, *, num_samples: int = 0, seed: int = 0,
                 default_drop_ray_prob: float = 0.0,
                 voxel: VoxelConfig | None = None) -> MixedCorpus:
    """Resolve files per dataset; CLI ``num_samples > 0`` and a non-zero ``seed`` override.

    ``voxel`` holds the CLI's ``--voxel_*`` settings; a dataset's ``voxel_grid``/
    ``voxel_dilate``/``voxel_max_steps`` keys override them for its items.
    """
    base_voxel = voxel or VoxelConfig()
    items, offsets, sizes, names, weights = [], [], [], [], []
    for d in cfg.datasets:
        files = cache_files(d.cache_root, d.split)
        if not files:
            raise MixConfigError(f"mix dataset {d.name!r}: no cache files under "
                                 f"{os.path.join(d.cache_root, d.split)}/*/*.npz")
        offsets.append(len(items))
        sizes.append(len(files))
        names.append(d.name)
        weights.append(d.weight)
        drop = d.overrides.get("drop_ray_prob")
        force = _as_bool(d.overrides.get("force_missing_ray", False))
        vox = base_voxel.with_overrides(d.overrides)
        items += [Item(f, d.backend, -1, None if drop is None else float(drop), force, vox)
                  for f in files]
    w = np.asarray(weights, dtype=np.float64)
    n = num_samples if num_samples > 0 else (cfg.num_samples or len(items))
    s = seed if (seed != 0 and seed != cfg.seed) else cfg.seed
    return MixedCorpus(items, offsets, sizes, w / w.sum(), int(n), cfg.replacement, s, names)
