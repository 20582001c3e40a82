"""Count a 70B-parameter LLaMA-shaped decoder at sequence 4096 on `meta`.

Targets (issue 2): under 10 s, under 2 GiB peak RSS, matmul FLOPs equal to the closed form.
Nothing is allocated: the model and the tokens live on the meta device.

    python bench/meta_scale.py
"""
from __future__ import annotations

import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

import effmetrics as em

# LLaMA-2 70B (Touvron et al. 2023): GQA with 8 KV heads, SwiGLU MLP, RMSNorm.
DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, SEQ = 8192, 80, 64, 8, 28672, 32000, 4096


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        hd = DIM // HEADS
        self.attention_norm = RMSNorm(DIM)
        self.wq = nn.Linear(DIM, HEADS * hd, bias=False)
        self.wk = nn.Linear(DIM, KV_HEADS * hd, bias=False)
        self.wv = nn.Linear(DIM, KV_HEADS * hd, bias=False)
        self.wo = nn.Linear(HEADS * hd, DIM, bias=False)
        self.ffn_norm = RMSNorm(DIM)
        self.w1 = nn.Linear(DIM, FFN, bias=False)
        self.w3 = nn.Linear(DIM, FFN, bias=False)
        self.w2 = nn.Linear(FFN, DIM, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        hd = DIM // HEADS
        h = self.attention_norm(x)
        q = self.wq(h).view(b, s, HEADS, hd).transpose(1, 2)
        k = self.wk(h).view(b, s, KV_HEADS, hd).transpose(1, 2)
        v = self.wv(h).view(b, s, KV_HEADS, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(o.transpose(1, 2).reshape(b, s, DIM))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = RMSNorm(DIM)
        self.output = nn.Linear(DIM, VOCAB, bias=False)
        half = DIM // HEADS // 2
        self.register_buffer("cos", torch.ones(SEQ, half), persistent=False)
        self.register_buffer("sin", torch.zeros(SEQ, half), persistent=False)

    def forward(self, tokens):
        x = self.tok_embeddings(tokens)
        s = tokens.shape[1]
        for layer in self.layers:
            x = layer(x, self.cos[:s], self.sin[:s])
        return self.output(self.norm(x))


def closed_form():
    kv = KV_HEADS * DIM // HEADS
    layer_params = 2 * DIM * DIM + 2 * DIM * kv + 3 * DIM * FFN + 2 * DIM
    params = VOCAB * DIM + LAYERS * layer_params + DIM + DIM * VOCAB
    # per layer: q, k, v, o projections; QK^T and AV over all heads (causal not discounted);
    # the SwiGLU MLP's three matrices; then the output projection
    layer_macs = SEQ * (2 * DIM * DIM + 2 * DIM * kv) + 2 * SEQ * SEQ * DIM + 3 * SEQ * DIM * FFN
    return params, LAYERS * layer_macs + SEQ * DIM * VOCAB


def main():
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = Llama()
    tokens = torch.zeros(1, SEQ, dtype=torch.long, device="meta")
    t1 = time.perf_counter()
    rep = em.profile(model, tokens)
    t2 = time.perf_counter()
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    params, macs = closed_form()
    print(f"LLaMA-shaped decoder: {LAYERS} layers, dim {DIM}, GQA {HEADS}/{KV_HEADS}, "
          f"FFN {FFN}, sequence {SEQ}, on meta")
    print(f"  params      {rep.params.total:,} (closed form {params:,})")
    print(f"  matmul MACs {rep.macs_matmul:,} (closed form {macs:,})")
    print(f"  total FLOPs {rep.flops:,} = {rep.flops / 1e12:.1f} TFLOPs "
          f"(matmul {rep.flops_matmul / rep.flops:.1%})")
    print(f"  unsupported ops: {rep.unsupported_ops or 'none'}")
    print(f"  build {t1 - t0:.2f} s, count {t2 - t1:.2f} s (target < 10 s), "
          f"peak RSS {rss_gib:.2f} GiB (target < 2 GiB)")
    ok = rep.params.total == params and rep.macs_matmul == macs and t2 - t1 < 10 and rss_gib < 2
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
