"""Models written from plain torch for the tests (no effmetrics code involved)."""
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, attention="sdpa"):
        super().__init__()
        self.heads = heads
        self.attention = attention
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def attend(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.attention == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:  # einsum attention, written out
            a = torch.einsum("bhqd,bhkd->bhqk", q, k) * (d // self.heads) ** -0.5
            o = torch.einsum("bhqk,bhkd->bhqd", a.softmax(-1), v)
        return self.proj(o.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """ViT as in Dosovitskiy et al.: patch conv, CLS token, learned pos-emb, pre-LN blocks."""

    def __init__(self, dim, depth, heads, mlp, patch, image=224, classes=1000, attention="sdpa"):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp, attention) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, img):
        x = self.patch_embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def vit_b16(**kw):
    return ViT(768, 12, 12, 3072, 16, **kw)


class UniversalTransformer(nn.Module):
    """One block's weights applied `depth` times (Dehghani et al. 2019)."""

    def __init__(self, dim, depth, heads, mlp, shared=True):
        super().__init__()
        self.depth = depth
        if shared:
            self.block = Block(dim, heads, mlp)
        else:
            self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(depth))

    def forward(self, x):
        for i in range(self.depth):
            x = (self.block if hasattr(self, "block") else self.blocks[i])(x)
        return x


class Top1MoE(nn.Module):
    """Switch-style layer: a router picks one expert MLP per token."""

    def __init__(self, dim, hidden, experts):
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            for _ in range(experts))

    def forward(self, x):
        tokens = x.reshape(-1, x.shape[-1])
        gate = self.router(tokens).softmax(-1)
        weight, choice = gate.max(-1)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            idx = (choice == e).nonzero().flatten()
            if idx.numel():
                out[idx] = expert(tokens[idx]) * weight[idx, None]
        return out.reshape(x.shape)


class CNN(nn.Module):
    """Plain, grouped and depthwise convolutions, batch norm, pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=2, dilation=2, groups=32)
        self.pointwise = nn.Conv2d(32, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.max_pool2d(F.relu(self.grouped(x)), 2)
        x = self.pointwise(F.relu(self.depthwise(x)))
        return self.fc(self.pool(x).flatten(1))


class Decoder(nn.Module):
    """Transposed convolutions (upsampling) with output padding and groups."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.out(F.relu(self.up2(F.relu(self.up1(x)))))


class TCN(nn.Module):
    """Dilated conv1d stack (WaveNet-like)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(8 if i == 0 else 16, 16, 3, dilation=2 ** i, padding=2 ** i)
            for i in range(3))
        self.out = nn.Conv1d(16, 4, 1)

    def forward(self, x):
        for c in self.convs:
            x = torch.tanh(c(x))
        return self.out(x)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)
