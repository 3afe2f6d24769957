"""QueryNepa: a pre-LN causal transformer over point/ray query tokens.

    z     = token_mlp(feat) + type_emb(type_id) + pos_emb[:, :T]      (B, T, C)
    h     = CausalTransformer(z)                                        (B, T, C)
    z_hat = pred_head(h)                                                (B, T, C)

NEPA predicts the embedding of token t+1 from position t (``z_hat[:, :-1]`` vs ``z[:, 1:]``).
Attention uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU);
the parameter names match ``nn.TransformerEncoder`` so that checkpoints of the original code
load unchanged (``backbone.enc.layers.{i}.self_attn.in_proj_weight`` ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nepa3d.token import types as tt


@dataclass
class ModelConfig:
    feat_dim: int = tt.FEAT_DIM
    d_model: int = 384
    n_types: int = tt.N_TYPES_QA
    nhead: int = 6
    num_layers: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_len: int = 2048
    # The original initialises type_emb with nn.Embedding's N(0, 1): its norm (~sqrt(d)) then
    # dominates the residual stream and the last token barely differs across shapes at init
    # (measured: std across samples 0.002 vs norm 14.8 at d=128). GPT-style 0.02 by default;
    # 1.0 reproduces the original.
    type_emb_std: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused in-projection (nn.MultiheadAttention names)."""

    def __init__(self, d_model: int, nhead: int, dropout: float):
        super().__init__()
        assert d_model % nhead == 0, "d_model must be divisible by nhead"
        self.nhead = nhead
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C); allowed: None for plain causal, else bool (T, T) True = may attend."""
        B, T, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(B, T, 3, self.nhead, C // self.nhead).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        if allowed is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn = SelfAttention(d, cfg.nhead, cfg.dropout)
        self.linear1 = nn.Linear(d, int(d * cfg.mlp_ratio))
        self.linear2 = nn.Linear(int(d * cfg.mlp_ratio), d)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.norm1(x), allowed))
        return x + self.drop(self.linear2(self.drop(F.gelu(self.linear1(self.norm2(x))))))


class _Layers(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))


class CausalTransformer(nn.Module):
    """Stack of pre-LN blocks with causal attention; no final norm (as the original)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.enc = _Layers(cfg)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C); blocked: optional bool (T, T) extra pairs to hide (dual mask)."""
        allowed = None
        if blocked is not None:
            T = x.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            allowed = causal & ~blocked
        for layer in self.enc.layers:
            x = layer(x, allowed)
        return x


class QueryNepa(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        # Random draws in this order (token_mlp, type_emb, pos_emb, backbone, pred_head): every
        # earlier fixed-seed model and result stays bit-identical. Registration order is the
        # original's (type_emb before token_mlp): ``parameters()`` then lists pos_emb, type_emb,
        # token_mlp, backbone, pred_head, the order in which optimizer state is matched by
        # position (resume across this code and the original code).
        token_mlp = nn.Sequential(nn.Linear(cfg.feat_dim, d), nn.GELU(), nn.Linear(d, d))
        type_emb = nn.Embedding(cfg.n_types, d)
        nn.init.normal_(type_emb.weight, std=cfg.type_emb_std)
        self.type_emb = type_emb
        self.token_mlp = token_mlp
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.max_len, d))
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        self.backbone = CausalTransformer(cfg)
        self.pred_head = nn.Linear(d, d)

    def embed_tokens(self, feat: torch.Tensor, type_id: torch.Tensor) -> torch.Tensor:
        """feat (B, T, 15), type_id (B, T) -> z (B, T, C)"""
        T = feat.shape[1]
        if T > self.pos_emb.shape[1]:
            raise ValueError(f"sequence length {T} exceeds max_len {self.pos_emb.shape[1]}; "
                             "pass --max_len (the positional embedding is resized)")
        return self.token_mlp(feat) + self.type_emb(type_id) + self.pos_emb[:, :T]

    def forward(self, feat: torch.Tensor, type_id: torch.Tensor,
                blocked: torch.Tensor | None = None):
        """Returns z, z_hat, h, each (B, T, C)."""
        z = self.embed_tokens(feat, type_id)
        h = self.backbone(z, blocked)
        return z, self.pred_head(h), h


def dual_mask(T: int, p_near: float, p_far: float, window: int, *,
              generator: torch.Generator | None = None, device=None,
              type_id: torch.Tensor | None = None, type_aware: bool = False) -> torch.Tensor | None:
    """Random extra attention blocking over the strict past (dual masking).

    Pair (i, j) with rel = i - j > 0 is eligible; with ``type_aware`` both i and j must be
    query-like tokens (any batch element). Eligible pairs are blocked with probability
    ``p_near`` when 1 <= rel <= window, else ``p_far`` (``p_far`` for all when window <= 0).
    The diagonal and the future are never touched here. One mask for the whole batch.

    Returns bool (T, T), True = blocked, or None when both probabilities are 0.
    """
    p_near = min(max(float(p_near), 0.0), 1.0)
    p_far = min(max(float(p_far), 0.0), 1.0)
    if p_near <= 0 and p_far <= 0:
        return None
    i = torch.arange(T, device=device)
    rel = i[:, None] - i[None, :]
    eligible = rel > 0
    if type_aware and type_id is not None:
        ql = torch.zeros_like(type_id, dtype=torch.bool)
        for t in tt.QUERY_LIKE_TYPES:
            ql |= type_id == t
        ql = ql.any(dim=0).to(device)
        eligible &= ql[:, None] & ql[None, :]
    if window > 0:
        p = torch.where(rel <= window, torch.tensor(p_near, device=device),
                        torch.tensor(p_far, device=device))
    else:
        p = torch.full((T, T), p_far, device=device)
    u = torch.rand(T, T, generator=generator, device=device)
    return eligible & (u < p)
