"""Reference models for the paper's cases: plain nn.Modules built from named configs.

ZOO (one table at the bottom) names them: ViT Ti/S/B/L/H at /8, /16, /32; a BERT-like encoder,
its Universal-Transformer twin (one block applied L times) and Switch variants (8/32/128
experts, top-1, capacity factor 1.25); a Perceiver-IO-like latent model; ResNet-50 and
EfficientNet-B0 layouts. build(name, **overrides) makes one; example_input(name) its input.
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
    pool: str = "cls"  # "cls": a CLS token feeds the head; "gap": the mean of the patch tokens


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
        # unbind, as eager Python's unpacking does (Dynamo traces unpacking as indexing instead)
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
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
    """Vision Transformer: patch conv, learned position embedding, pre-LN blocks, final
    LayerNorm, linear head on the CLS token (pool="cls") or on the mean token (pool="gap")."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = config
        if c.pool not in ("cls", "gap"):
            raise ValueError(f"ViT pool must be 'cls' or 'gap'; got {c.pool!r}")
        self.config = c
        tokens = (c.image // c.patch) ** 2 + (c.pool == "cls")
        self.patch_embed = nn.Conv2d(3, c.dim, c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, c.dim))
        self.blocks = nn.Sequential(*(Block(c.dim, c.heads, c.mlp) for _ in range(c.depth)))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(1))


def vit(name: str = "vit-b/16", **overrides) -> ViT:
    """Build a named ViT ("vit-ti/16", "vit-b/32", ...); keyword overrides change the config."""
    if name not in VIT_CONFIGS:
        raise ValueError(f"unknown ViT {name!r}; choose one of {', '.join(VIT_CONFIGS)}")
    return ViT(dataclasses.replace(VIT_CONFIGS[name], **overrides))


# ---------------------------------------------------------------- text: BERT-like, UT, Switch

@dataclasses.dataclass(frozen=True)
class TextConfig:
    """A transformer encoder over tokens. experts > 0 makes every `moe_every`-th MLP a
    Switch mixture of experts (top_k routing with a capacity factor); shared=True applies one
    block `depth` times (Universal Transformer)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp: int = 3072
    vocab: int = 30522
    max_len: int = 512
    type_vocab: int = 2
    pooler: bool = True
    shared: bool = False
    experts: int = 0
    top_k: int = 1
    capacity_factor: float = 1.25
    moe_every: int = 2


class SwitchMLP(nn.Module):
    """Switch-Transformer FFN (Fedus et al. 2021): a router sends each token to its top_k
    experts; an expert takes at most capacity_factor * tokens * top_k / experts tokens and the
    overflow passes through the residual only. Parameters grow with experts, FLOPs per token
    do not. Routing depends on the data, which `meta` tensors do not have: there each token
    goes to experts round-robin (the same work per token as any routing within capacity)."""

    def __init__(self, dim: int, hidden: int, experts: int, top_k: int, capacity_factor: float):
        super().__init__()
        self.top_k, self.capacity_factor = top_k, capacity_factor
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(MLP(dim, hidden) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        gates = self.router(tokens).softmax(-1)
        weight, choice = gates.topk(self.top_k, dim=-1)
        capacity = int(self.capacity_factor * tokens.shape[0] * self.top_k / len(self.experts))
        out = torch.zeros_like(tokens)
        n, experts = tokens.shape[0], len(self.experts)
        for e, expert in enumerate(self.experts):
            if tokens.is_meta:
                rows = torch.cat([torch.arange((e - k) % experts, n, experts, device=x.device)
                                  for k in range(self.top_k)])
                slot = torch.cat([torch.full((len(range((e - k) % experts, n, experts)),), k,
                                             device=x.device) for k in range(self.top_k)])
            else:
                rows, slot = (choice == e).nonzero(as_tuple=True)
            rows, slot = rows[:max(capacity, 1)], slot[:max(capacity, 1)]
            if rows.numel():
                out[rows] += expert(tokens[rows]) * weight[rows, slot, None]
        return out.reshape(x.shape)


class PostLNBlock(nn.Module):
    """BERT's block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, dim: int, heads: int, mlp: nn.Module):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.mlp = mlp
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class TextEncoder(nn.Module):
    """BERT-like encoder (Devlin et al. 2019): token, position and type embeddings with
    LayerNorm, post-LN blocks, a tanh pooler on the first token. BERT-Base has 109,482,240
    parameters."""

    def __init__(self, config: TextConfig):
        super().__init__()
        c = self.config = config
        self.tok_embed = nn.Embedding(c.vocab, c.dim)
        self.pos_embed = nn.Embedding(c.max_len, c.dim)
        self.type_embed = nn.Embedding(c.type_vocab, c.dim)
        self.embed_norm = nn.LayerNorm(c.dim, eps=1e-12)

        def mlp_of(i: int) -> nn.Module:
            if c.experts and i % c.moe_every == c.moe_every - 1:
                return SwitchMLP(c.dim, c.mlp, c.experts, c.top_k, c.capacity_factor)
            return MLP(c.dim, c.mlp)

        if c.shared:
            self.block = PostLNBlock(c.dim, c.heads, mlp_of(0))
        else:
            self.blocks = nn.ModuleList(PostLNBlock(c.dim, c.heads, mlp_of(i))
                                        for i in range(c.depth))
        self.pooler = nn.Linear(c.dim, c.dim) if c.pooler else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_embed(tokens) + self.pos_embed(positions) + self.type_embed(
            torch.zeros_like(tokens))
        x = self.embed_norm(x)
        for i in range(self.config.depth):
            x = (self.block if self.config.shared else self.blocks[i])(x)
        return torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else x


# ---------------------------------------------------------------- Perceiver-IO-like

@dataclasses.dataclass(frozen=True)
class PerceiverConfig:
    """Perceiver IO (Jaegle et al. 2022): inputs cross-attend into a small latent array, the
    latents self-attend `depth` times, output queries cross-attend back out."""

    input_dim: int = 256
    latents: int = 256
    dim: int = 512
    depth: int = 8
    heads: int = 8
    mlp: int = 2048
    vocab: int = 262  # bytes + specials
    outputs: int = 2048


class CrossAttention(nn.Module):
    def __init__(self, q_dim: int, kv_dim: int, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(q_dim, dim)
        self.kv = nn.Linear(kv_dim, 2 * dim)
        self.proj = nn.Linear(dim, q_dim)

    def forward(self, queries: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        b, n, _ = queries.shape
        q = self.q(queries).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(inputs).reshape(b, inputs.shape[1], 2, self.heads, -1).permute(
            2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class PerceiverIO(nn.Module):
    def __init__(self, config: PerceiverConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab, c.input_dim)
        self.latent = nn.Parameter(torch.zeros(1, c.latents, c.dim))
        self.encode = CrossAttention(c.dim, c.input_dim, c.dim, 1)
        self.blocks = nn.Sequential(*(Block(c.dim, c.heads, c.mlp) for _ in range(c.depth)))
        self.queries = nn.Parameter(torch.zeros(1, c.outputs, c.input_dim))
        self.decode = CrossAttention(c.input_dim, c.dim, c.dim, 1)
        self.head = nn.Linear(c.input_dim, c.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs = self.embed(tokens)
        z = self.latent.expand(tokens.shape[0], -1, -1)
        z = self.blocks(z + self.encode(z, inputs))
        q = self.queries[:, : tokens.shape[1]].expand(tokens.shape[0], -1, -1)
        return self.head(q + self.decode(q, z))


# ---------------------------------------------------------------- conv nets

class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """ResNet-50 layout (He et al. 2016; torchvision's: 25,557,032 parameters)."""

    def __init__(self, layers=(3, 4, 6, 3), classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = 4 * width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.fc(F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


class MBConv(nn.Module):
    """Inverted residual with squeeze-excitation (MobileNetV2 / EfficientNet)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = (nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid),
                                     nn.SiLU()) if expand != 1 else nn.Identity())
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid), nn.SiLU())
        squeeze = max(1, cin // 4)
        self.se_reduce = nn.Conv2d(mid, squeeze, 1)
        self.se_expand = nn.Conv2d(squeeze, mid, 1)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(self.expand(x))
        s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        y = self.project(y * s)
        return x + y if self.residual else y


# EfficientNet-B0 stages (Tan & Le 2019, Table 1): expand, channels, repeats, stride, kernel
EFFICIENTNET_B0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                   (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


class EfficientNet(nn.Module):
    """EfficientNet-B0 layout: depthwise MBConv stages; few FLOPs, low arithmetic intensity."""

    def __init__(self, stages=EFFICIENTNET_B0, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.SiLU())
        blocks, cin = [], 32
        for expand, cout, repeats, stride, kernel in stages:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280),
                                  nn.SiLU())
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------- the named zoo (one table)

def _text(**kw) -> TextConfig:
    return TextConfig(**kw)


# name -> (model class, config or constructor kwargs, input spec (shape, dtype))
ZOO: dict = {
    **{name: (ViT, cfg, ((3, cfg.image, cfg.image), "float")) for name, cfg in VIT_CONFIGS.items()},
    "bert-base": (TextEncoder, _text(), ((128,), "tokens")),
    "bert-6l": (TextEncoder, _text(depth=6), ((128,), "tokens")),
    "ut-base": (TextEncoder, _text(shared=True), ((128,), "tokens")),
    "switch-base-8": (TextEncoder, _text(experts=8), ((128,), "tokens")),
    "switch-base-32": (TextEncoder, _text(experts=32), ((128,), "tokens")),
    "switch-base-128": (TextEncoder, _text(experts=128), ((128,), "tokens")),
    "perceiver-io": (PerceiverIO, PerceiverConfig(), ((2048,), "bytes")),
    "resnet-50": (ResNet, {}, ((3, 224, 224), "float")),
    "efficientnet-b0": (EfficientNet, {}, ((3, 224, 224), "float")),
}


def build(name: str, **overrides) -> nn.Module:
    """A zoo model by name; keyword overrides change its config (e.g. depth=6)."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(sorted(ZOO))}")
    cls, config, _ = ZOO[name]
    if isinstance(config, dict):
        return cls(**{**config, **overrides})
    return cls(dataclasses.replace(config, **overrides))


def byte_bert(depth: int, dim: int) -> nn.Module:
    """BERT over UTF-8 bytes, Perceiver IO's baseline (Jaegle et al. 2022): a vocabulary of 262
    (256 bytes and special tokens), 2048 positions, heads of 64 dimensions, MLP 4x."""
    return build("bert-base", depth=depth, dim=dim, heads=dim // 64, mlp=4 * dim, vocab=262,
                 max_len=2048)


def magnitude_prune(model: nn.Module, amount: float | str) -> nn.Module:
    """Zero the smallest-magnitude weights of every nn.Linear in place (the sparsity sweep's
    models): a fraction `amount` of each layer's weight, or "2:4", the two smallest of each
    group of four along the input dimension (the semi-structured pattern, kept as a dense
    tensor: its kernels are the dense ones). Biases, norms and convolutions stay dense."""
    if amount == "2:4":
        keep = None
    elif isinstance(amount, (int, float)) and 0 <= amount < 1:
        keep = float(amount)
    else:
        raise ValueError(f"magnitude_prune(amount=...): a fraction in [0, 1) or '2:4'; got "
                         f"{amount!r}")
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.Linear):
                continue
            w = m.weight
            if keep is None:
                if w.shape[1] % 4:
                    raise ValueError(f"2:4 needs input dims divisible by 4; {m} has {w.shape[1]}")
                groups = w.abs().reshape(w.shape[0], -1, 4)
                drop = groups.argsort(dim=-1)[..., :2]  # the two smallest of each four
                mask = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
                w.mul_(mask.reshape(w.shape))
            elif keep > 0:
                k = int(round(keep * w.numel()))
                if k:
                    cut = w.abs().flatten().kthvalue(k).values
                    w.masked_fill_(w.abs() <= cut, 0.0)
    return model


def example_input(name: str, batch: int = 1, device: str | torch.device = "cpu",
                  **overrides) -> torch.Tensor:
    """An input of the right shape and kind for a zoo model (random tokens or images)."""
    _, config, (shape, kind) = ZOO[name]
    if kind == "float":
        size = overrides.get("image", shape[-1])
        return torch.randn(batch, 3, size, size, device=device)
    vocab = {"tokens": overrides.get("vocab", getattr(config, "vocab", 30522)),
             "bytes": 256}[kind]
    length = min(shape[0], overrides.get("max_len", shape[0]))
    return torch.randint(0, vocab, (batch, length), device=device)
