"""Reference models for the paper's cases (plain nn.Modules, built from named configs).

This module starts with the ViT family; the model zoo of the analysis work grows here.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    dim: int
    depth: int
    heads: int
    mlp: int
    patch: int = 16
    image: int = 224
    classes: int = 1000


# Dosovitskiy et al. 2021 (Ti and S from DeiT); see ORACLES.md.
VIT_WIDTHS = {
    "Ti": dict(dim=192, depth=12, heads=3, mlp=768),
    "S": dict(dim=384, depth=12, heads=6, mlp=1536),
    "B": dict(dim=768, depth=12, heads=12, mlp=3072),
    "L": dict(dim=1024, depth=24, heads=16, mlp=4096),
    "H": dict(dim=1280, depth=32, heads=16, mlp=5120),
}
VIT_CONFIGS = {f"vit-{w.lower()}/{p}": ViTConfig(**kw, patch=p)
               for w, kw in VIT_WIDTHS.items() for p in (8, 16, 32)}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer: patch conv, CLS token, learned position embedding, pre-LN blocks,
    final LayerNorm, linear head on the CLS token."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = config
        self.config = c
        tokens = (c.image // c.patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, c.dim, c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, c.dim))
        self.blocks = nn.Sequential(*(Block(c.dim, c.heads, c.mlp) for _ in range(c.depth)))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit(name: str = "vit-b/16", **overrides) -> ViT:
    """Build a named ViT ("vit-ti/16", "vit-b/32", ...); keyword overrides change the config."""
    if name not in VIT_CONFIGS:
        raise ValueError(f"unknown ViT {name!r}; choose one of {', '.join(VIT_CONFIGS)}")
    return ViT(dataclasses.replace(VIT_CONFIGS[name], **overrides))
