"""Every research CLI has one frozen configuration, built once from its parsed flags.

- one ``CliConfig`` subclass per CLI module (the modules ``test_cli_help`` finds), frozen,
  with field names equal to the parser's ``dest`` names;
- its ``record()`` is the ``vars(namespace)`` the CLI recorded before (same keys, order, values
  and types) for a minimal command line and for every lab-notes command line;
- the shared flag groups are defined once: each shared flag is added by one function of
  ``nepa3d/cli/groups.py`` and every configuration that has the flag inherits its group;
- the 0/1 switch parser on a hand-written table; the qualitative tool's CPAC configuration
  against a hand-written expectation; derived configurations leave the original unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import lab_commands as L
from test_cli_help import MODULES

from nepa3d.cli.config import CliConfig, config_from_args, parse_switch
from nepa3d.cli.groups import (ClsEvalArgs, DeviceArgs, DeviceUnavailable,
                                        EvalSamplingArgs, ModelShapeArgs, PrecisionArgs,
                                        UcprSamplingArgs, VoxelArgs, resolve_device)

REPO = Path(__file__).resolve().parents[1]


def config_class(module: str) -> type[CliConfig]:
    mod = importlib.import_module(module)
    found = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, CliConfig)
             and v.__module__ == module and "build_parser" in vars(v)]
    assert len(found) == 1, f"{module}: expected one CliConfig with build_parser, got {found}"
    return found[0]


def dests(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """A value for every required flag (its first choice, else ``x``)."""
    argv = []
    for a in parser._actions:
        if a.required:
            argv += [a.option_strings[0], str(a.choices[0]) if a.choices else "x"]
    return argv


def same_record(got: dict, want: dict) -> bool:
    return (list(got.items()) == list(want.items())
            and [type(v) for v in got.values()] == [type(v) for v in want.values()])


@pytest.mark.parametrize("module", MODULES)
def test_config_fields_are_the_flags_and_it_is_frozen(module):
    cls = config_class(module)
    parser = importlib.import_module(module).build_parser()
    assert sorted(f.name for f in dataclasses.fields(cls)) == sorted(dests(parser))
    ns = parser.parse_args(minimal_argv(parser))
    cfg = cls.from_args(ns)
    name = dests(parser)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, name, getattr(cfg, name))
    assert same_record(cfg.record(), vars(ns)), module  # what the CLI recorded before


@pytest.mark.parametrize("cmd", L.load_commands(), ids=lambda c: c.short)
def test_lab_command_records_what_the_namespace_held(cmd):
    parser = importlib.import_module(cmd.module).build_parser()
    cfg = config_class(cmd.module).parse(list(cmd.argv))
    assert same_record(cfg.record(), vars(parser.parse_args(list(cmd.argv))))


def test_switch_fields_are_bool_and_recorded_as_the_parser_wrote_them():
    from nepa3d.train.pretrain import PretrainConfig

    cfg = PretrainConfig.parse(["--qa_tokens", "1", "--add_eos", "0", "--force_missing_ray"])
    assert (cfg.qa_tokens, cfg.add_eos, cfg.force_missing_ray, cfg.save_last) == (True, False, True, True)
    rec = cfg.record()
    assert (rec["qa_tokens"], rec["add_eos"], rec["save_last"]) == (1, 0, 1)
    assert all(type(rec[k]) is int for k in ("qa_tokens", "add_eos", "save_last"))
    assert rec["force_missing_ray"] is True  # a store_true switch stays a bool
    # keys interned like vars(namespace)'s: pickled checkpoint args stay byte-identical
    assert all(k is sys.intern(k) for k in rec)


@pytest.mark.parametrize("value, want", [
    ("0", False), ("1", True), ("true", True), ("false", False), ("True", True), ("FALSE", False),
    (" 1 ", True), (0, False), (1, True), (True, True), (False, False)])
def test_parse_switch_accepts(value, want):
    assert parse_switch(value) is want


@pytest.mark.parametrize("value", ["2", "-1", "yes", "no", "on", "", "01x", 2, -1, 0.5, None])
def test_parse_switch_refuses(value):
    with pytest.raises(argparse.ArgumentTypeError, match="must be 0, 1, true or false"):
        parse_switch(value)


def test_a_flag_without_a_field_is_named():
    from nepa3d.train.scratch_ckpt import ScratchCkptConfig, build_parser

    ns = build_parser().parse_args(["--out", "x.pt"])
    ns.stray = 1
    with pytest.raises(TypeError, match=r"flags without a field \['stray'\]"):
        config_from_args(ScratchCkptConfig, ns)
    del ns.stray, ns.seed
    with pytest.raises(TypeError, match=r"fields without a flag \['seed'\]"):
        config_from_args(ScratchCkptConfig, ns)


# --- shared flag groups: one definition each --------------------------------------------------

#: shared flag -> the group dataclass every configuration with that flag inherits
GROUP_OF_FLAG = {"d_model": ModelShapeArgs, "layers": ModelShapeArgs, "heads": ModelShapeArgs,
                 "mlp_ratio": ModelShapeArgs, "type_emb_std": ModelShapeArgs,
                 "voxel_grid": VoxelArgs, "voxel_dilate": VoxelArgs, "voxel_max_steps": VoxelArgs,
                 "device": DeviceArgs, "precision": PrecisionArgs, "eval_seed": EvalSamplingArgs,
                 "eval_seed_gallery": UcprSamplingArgs, "mc_k": UcprSamplingArgs,
                 "ablate_point_xyz": UcprSamplingArgs, "fewshot_seed": ClsEvalArgs,
                 "mc_eval_k": ClsEvalArgs, "mc_eval_k_test": ClsEvalArgs}
_ADD = re.compile(r"""["']--(\w+)["']""")


def _flag_definitions() -> dict[str, list[str]]:
    """flag -> files under nepa3d/ whose source spells ``"--flag"`` as a string literal."""
    out: dict[str, list[str]] = {}
    for path in sorted((REPO / "nepa3d").rglob("*.py")):
        for name in _ADD.findall(path.read_text()):
            out.setdefault(name, []).append(str(path.relative_to(REPO)))
    return out


@pytest.mark.parametrize("flag", sorted(GROUP_OF_FLAG))
def test_shared_flag_is_defined_once(flag):
    where = _flag_definitions().get(flag, [])
    home = "nepa3d/backends/voxel.py" if flag.startswith("voxel_") else "nepa3d/cli/groups.py"
    assert where == [home], f"--{flag} is spelled in {where}: add it with its group's function"


@pytest.mark.parametrize("module", MODULES)
def test_configs_inherit_the_groups_of_their_shared_flags(module):
    cls = config_class(module)
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [f"{n}: {g.__name__}" for n, g in GROUP_OF_FLAG.items()
               if n in names and not issubclass(cls, g)]
    assert not missing, f"{cls.__name__} declares shared flags itself: {missing}"


def test_model_shape_maps_heads_and_layers_once():
    from nepa3d.train.pretrain import PretrainConfig
    from nepa3d.train.scratch_ckpt import ScratchCkptConfig

    argv = ["--d_model", "64", "--heads", "4", "--layers", "3", "--mlp_ratio", "2",
            "--type_emb_std", "1.0"]
    want = {"d_model": 64, "nhead": 4, "num_layers": 3, "mlp_ratio": 2.0, "type_emb_std": 1.0}
    assert PretrainConfig.parse(argv).model_kwargs() == want
    assert ScratchCkptConfig.parse(["--out", "x", *argv]).model_kwargs() == want


def test_one_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="--device cuda"):
            resolve_device("cuda")


# --- derived configurations ---------------------------------------------------------------------

def test_qualitative_probe_config_is_the_cpac_config_written_out():
    from nepa3d.analysis import qualitative_cpac_marching_cubes as Q

    args = Q.QualitativeMcConfig.parse([
        "--cache_root", "data/c", "--ckpt", "runs/a.pt", "--split", "test", "--max_len", "300",
        "--context_backend", "mesh", "--head_train_split", "train_udf", "--head_train_backend",
        "pointcloud", "--head_train_max_shapes", "12", "--n_context", "40", "--n_query_probe", "24",
        "--ridge_lambda", "0.5", "--rep_source", "zhat", "--eval_seed", "3", "--order_dtype",
        "float32", "--voxel_grid", "16", "--voxel_dilate", "2", "--voxel_max_steps", "7",
        "--batch", "5", "--device", "cpu", "--grid_res", "8", "--mc_level", "0.04"])
    want = {  # the CPAC flags, in its parser's order: the tool's values, fixed ones, CPAC defaults
        "cache_root": "data/c", "split": "test", "ckpt": "runs/a.pt", "max_len": 300,
        "context_backend": "mesh", "n_context": 40, "n_query": 24, "add_eos": -1, "qa_tokens": -1,
        "order_dtype": "float32", "eval_seed": 3, "seed": None, "device": "cpu", "batch": 5,
        "precision": "fp32", "workers": 0, "head_train_ratio": 0.2, "head_train_n": 0,
        "head_train_split": "train_udf", "head_train_backend": "pointcloud",
        "head_train_max_shapes": 12, "ridge_lambda": 0.5, "ridge_lipschitz_lambda": 0.0,
        "ridge_lipschitz_pairs": 2048, "ridge_lipschitz_steps": 200, "ridge_lipschitz_lr": 0.01,
        "ridge_lipschitz_batch": 8192, "ridge_lipschitz_max_points": 200000,
        "ridge_lipschitz_seed": 0, "tau": 0.03, "max_shapes": 0, "voxel_grid": 16,
        "voxel_dilate": 2, "voxel_max_steps": 7, "disjoint_context_query": 1,
        "context_mode_train": "normal", "context_mode_test": "normal", "mismatch_shift": 1,
        "rep_source": "zhat", "query_source": "grid", "query_pool_frac": 0.5,
        "grid_sample_mode": "uniform", "grid_near_tau": 0.05, "grid_near_frac": 0.7,
        "grid_res_schedule": "16,32,64", "grid_c2f_expand": 1, "grid_c2f_stage_weights": "",
        "target_transform": "none", "target_trunc_max": 0.1, "target_log_scale": 0.03,
        "report_near_tau": 0.05, "baseline": "none", "baseline_only": 0, "out_json": ""}
    got = Q.probe_config(args)
    assert same_record(got.record(), want)
    assert got.disjoint_context_query is True and got.baseline_only is False


def test_pretrain_resolves_a_copy():
    from nepa3d.train.pretrain import PretrainConfig, resolve_run

    cfg = PretrainConfig.parse(["--n_point", "4", "--n_ray", "2", "--n_point_schedule", "0:8,1:16",
                                "--epochs", "2", "--qa_tokens", "1"])
    run = resolve_run(cfg)
    assert (cfg.max_len, cfg.n_point) == (-1, 4)  # untouched
    # epoch 1 is the longest: 1 BOS + 2 x (16 points + 2 rays) Q/A tokens + 1 EOS
    assert (run.max_len, run.n_point, run.n_ray, run.epochs) == (38, 8, 2, 2)


def test_cpac_seed_alias_derives_a_copy():
    from nepa3d.analysis.completion_cpac_udf import CompletionCpacConfig, with_seed_alias

    cfg = CompletionCpacConfig.parse(["--cache_root", "c", "--ckpt", "k", "--eval_seed", "1",
                                      "--seed", "9"])
    assert (with_seed_alias(cfg).eval_seed, cfg.eval_seed) == (9, 1)
    plain = CompletionCpacConfig.parse(["--cache_root", "c", "--ckpt", "k"])
    assert with_seed_alias(plain) is plain
