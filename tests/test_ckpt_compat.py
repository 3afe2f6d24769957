"""Checkpoints resume both ways between this code and the original 3D-NEPA code.

torch restores optimizer state by position, so the parameter order matters. The original
model is re-created here without nepa3d.models: type_emb registered before token_mlp, the
backbone an ``nn.TransformerEncoder`` of pre-LN ``nn.TransformerEncoderLayer`` (same state-dict
keys as ours), aux heads in a ModuleDict after the model in the optimizer.
"""

from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.train import aux_losses as aux, pretrain
from nepa3d.utils.ckpt import (OPT_NAMES_KEY, load_checkpoint, optimizer_state_for,
                               token_mlp_first)
from planted import write_planted

D, LAYERS, HEADS, N_TYPES = 32, 2, 2, 9
MAX_LEN = 1 + 2 * (16 + 8) + 1  # QA, n_point 16, n_ray 8, EOS
SMALL = ["--batch", "4", "--n_point", "16", "--n_ray", "8", "--d_model", str(D), "--layers",
         str(LAYERS), "--heads", str(HEADS), "--num_workers", "0", "--qa_tokens", "1", "--seed", "3",
         "--lr", "1e-3", "--aux_b2_weight", "0.1", "--aux_b3_weight", "0.1", "--auto_resume", "0"]
AUX_NAMES = ("ray_hit", "ray_t", "point_dist")  # B-2 then B-3, as the original creates them


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(D, HEADS, 4 * D, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)


class OriginalModel(nn.Module):
    """The original QueryNepa's parameter layout (``nepa3d/models/query_nepa.py``,
    KohsukeIde/3D-NEPA @ 737d98f)."""

    def __init__(self):
        super().__init__()
        self.type_emb = nn.Embedding(N_TYPES, D)
        self.token_mlp = nn.Sequential(nn.Linear(15, D), nn.GELU(), nn.Linear(D, D))
        self.pos_emb = nn.Parameter(torch.zeros(1, MAX_LEN, D))
        self.backbone = _Backbone()
        self.pred_head = nn.Linear(D, D)


def original_with_optimizer(seed=0):
    torch.manual_seed(seed)
    model = OriginalModel()
    heads = nn.ModuleDict({n: nn.Linear(D, 1) for n in AUX_NAMES})
    opt = torch.optim.AdamW(list(model.parameters()) + list(heads.parameters()), lr=1e-3,
                            weight_decay=0.05)
    named = dict(model.named_parameters())
    named.update({f"aux_heads.{n}": p for n, p in heads.named_parameters()})
    return model, heads, opt, named


def adam_steps(params, opt, n=2, seed=0):
    """n AdamW steps on a loss that gives every parameter its own gradient."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad()
        loss = sum((p * torch.randn(p.shape, generator=g)).sum() + (p ** 2).sum() * (i + 1)
                   for i, p in enumerate(params))
        loss.backward()
        opt.step()


def state_by_name(opt, named: dict) -> dict:
    return {n: opt.state[p] for n, p in named.items()}


def assert_same_state(got: dict, want: dict):
    assert set(got) == set(want)
    for n in want:
        assert set(got[n]) == set(want[n]) == {"step", "exp_avg", "exp_avg_sq"}, n
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(got[n][k], want[n][k]), (n, k)


def ours_with_optimizer():
    """Model, aux heads and optimizer as pretrain.train builds them for SMALL."""
    model = QueryNepa(ModelConfig(d_model=D, n_types=N_TYPES, nhead=HEADS, num_layers=LAYERS,
                                  max_len=MAX_LEN))
    heads = aux.AuxHeads(D, 0.1, 0.1, 0.0)
    opt = torch.optim.AdamW(list(model.parameters()) + list(heads.parameters()), lr=1e-3,
                            weight_decay=0.05)
    named = dict(model.named_parameters())
    named.update({f"aux_heads.{n}": p for n, p in heads.named_parameters()})
    return model, heads, opt, named


def resume_here(ck_path: Path, tmp_path: Path):
    """try_resume of an explicit --resume into a fresh model + optimizer (as pretrain.train)."""
    args = dataclasses.replace(pretrain.PretrainConfig.parse(
        ["--resume", str(ck_path), *SMALL, "--save_dir", str(tmp_path / "resume")]), max_len=MAX_LEN)
    model, heads, opt, named = ours_with_optimizer()
    start, step = pretrain.try_resume(args, model, opt, tmp_path, heads)
    return model, heads, opt, named, start, step


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    write_planted(root, "train", 4, seed=0)
    return root


@pytest.fixture(scope="module")
def original_ckpt(tmp_path_factory):
    """A checkpoint as the original writes it (the keys of its ``nepa3d/train/pretrain.py``),
    after 2 AdamW steps."""
    model, heads, opt, named = original_with_optimizer()
    adam_steps(list(named.values()), opt)
    args = {"n_point": 16, "n_ray": 8, "d_model": D, "layers": LAYERS, "heads": HEADS,
            "qa_tokens": 1, "add_eos": 1, "max_len": MAX_LEN, "lr": 1e-3, "batch": 4}
    ck = {"model": model.state_dict(), "aux_heads": heads.state_dict(), "opt": opt.state_dict(),
          "scaler": None, "args": args, "epoch": 0, "step": 2}
    path = tmp_path_factory.mktemp("orig") / "ckpt_ep000.pt"
    torch.save(ck, path)
    return path, state_by_name(opt, named)


@pytest.fixture(scope="module")
def our_run(shapes, tmp_path_factory):
    """One epoch of this code's pretrain (aux heads on)."""
    run = tmp_path_factory.mktemp("ours")
    assert pretrain.main(["--cache_root", str(shapes), "--epochs", "1", *SMALL,
                          "--save_dir", str(run)]) == 0
    return run / "last.pt"


def test_parameter_order_is_the_originals():
    ours = [n for n, _ in QueryNepa(ModelConfig(d_model=D, n_types=N_TYPES, nhead=HEADS,
                                                num_layers=LAYERS, max_len=MAX_LEN)).named_parameters()]
    assert ours == [n for n, _ in OriginalModel().named_parameters()]
    assert ours[:3] == ["pos_emb", "type_emb.weight", "token_mlp.0.weight"]


def test_original_checkpoint_resumes_with_its_optimizer_state(original_ckpt, tmp_path, capsys):
    path, want = original_ckpt
    model, heads, opt, named, start, step = resume_here(path, tmp_path)
    out = capsys.readouterr().out
    assert "not restored" not in out and "original's parameter order" in out
    assert (start, step) == (1, 2)
    assert_same_state(state_by_name(opt, named), want)
    adam_steps(list(named.values()), opt, n=1)  # and it steps


def test_original_checkpoint_resumes_through_the_cli(original_ckpt, shapes, tmp_path, capsys):
    path, want = original_ckpt
    run = tmp_path / "cont"
    assert pretrain.main(["--cache_root", str(shapes), "--resume", str(path), "--epochs", "2",
                          *SMALL, "--save_dir", str(run)]) == 0
    assert "not restored" not in capsys.readouterr().out
    ck = load_checkpoint(run / "last.pt")
    steps = ck["step"] - 2  # this epoch's steps on top of the original's 2
    assert steps > 0
    # every parameter's step count continues the original's: the state was restored
    assert {int(s["step"]) for s in ck["opt"]["state"].values()} == {2 + steps}


def test_our_checkpoint_loads_by_position_into_the_original(our_run):
    ck = load_checkpoint(our_run)
    model, heads, opt, named = original_with_optimizer(seed=1)
    model.load_state_dict(ck["model"])
    heads.load_state_dict(ck["aux_heads"])
    opt.load_state_dict(ck["opt"])  # by position, as the original does
    assert ck[OPT_NAMES_KEY] == list(named)
    saved = ck["opt"]["state"]
    for i, name in enumerate(ck[OPT_NAMES_KEY]):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[named[name]][k], saved[i][k]), (name, k)
    adam_steps(list(named.values()), opt, n=1)


def _reordered(ck: dict, order: list[str]) -> dict:
    """ck's optimizer state laid out in ``order`` (names), without opt_param_names."""
    names = ck[OPT_NAMES_KEY]
    state = ck["opt"]["state"]
    out = {k: v for k, v in ck.items() if k != OPT_NAMES_KEY}
    group = dict(ck["opt"]["param_groups"][0], params=list(range(len(order))))
    out["opt"] = {"state": {i: state[names.index(n)] for i, n in enumerate(order)
                            if names.index(n) in state},
                  "param_groups": [group]}
    return out


def test_old_order_checkpoint_resumes_with_the_right_state(our_run, tmp_path, capsys):
    ck = load_checkpoint(our_run)
    old = token_mlp_first(ck[OPT_NAMES_KEY])
    assert old[1:6] == ["token_mlp.0.weight", "token_mlp.0.bias", "token_mlp.2.weight",
                        "token_mlp.2.bias", "type_emb.weight"]
    path = tmp_path / "old.pt"
    torch.save(_reordered(ck, old), path)
    want = {n: ck["opt"]["state"][i] for i, n in enumerate(ck[OPT_NAMES_KEY])}
    _, _, opt, named, _, _ = resume_here(path, tmp_path)
    assert "old parameter order" in capsys.readouterr().out
    assert_same_state(state_by_name(opt, named), want)


def test_named_state_resumes_in_any_saved_order(our_run, tmp_path):
    ck = load_checkpoint(our_run)
    order = list(reversed(ck[OPT_NAMES_KEY]))
    shuffled = _reordered(ck, order)
    shuffled[OPT_NAMES_KEY] = order
    path = tmp_path / "rev.pt"
    torch.save(shuffled, path)
    want = {n: ck["opt"]["state"][i] for i, n in enumerate(ck[OPT_NAMES_KEY])}
    _, _, opt, named, _, _ = resume_here(path, tmp_path)
    assert_same_state(state_by_name(opt, named), want)


def test_unmatchable_or_ambiguous_state_gives_a_fresh_optimizer(our_run, tmp_path, capsys):
    ck = load_checkpoint(our_run)
    names = ck[OPT_NAMES_KEY]
    # fits no known order
    bad = _reordered(ck, names[:1] + names[2:] + names[1:2])
    torch.save(bad, tmp_path / "bad.pt")
    _, _, opt, _, _, _ = resume_here(tmp_path / "bad.pt", tmp_path)
    lines = [l for l in capsys.readouterr().out.splitlines() if "not restored" in l]
    assert len(lines) == 1 and "fits no known parameter order" in lines[0]
    assert not opt.state
    # the five parameters that tell the orders apart have no state: ambiguous
    amb = _reordered(ck, names)
    for i in range(1, 6):
        amb["opt"]["state"].pop(i)
    torch.save(amb, tmp_path / "amb.pt")
    _, _, opt, _, _, _ = resume_here(tmp_path / "amb.pt", tmp_path)
    lines = [l for l in capsys.readouterr().out.splitlines() if "not restored" in l]
    assert len(lines) == 1 and "several known parameter orders" in lines[0]
    assert not opt.state
    # names of other parameters
    other = dict(ck)
    other[OPT_NAMES_KEY] = ["x" + n for n in names]
    torch.save(other, tmp_path / "other.pt")
    _, _, opt, _, _, _ = resume_here(tmp_path / "other.pt", tmp_path)
    assert "other parameters" in capsys.readouterr().out and not opt.state


def test_optimizer_state_for_checks_group_sizes():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([a, b])
    saved = torch.optim.AdamW([nn.Parameter(torch.zeros(3))]).state_dict()
    state, why = optimizer_state_for(opt, ["a", "b"], saved)
    assert state is None and "groups" in why
