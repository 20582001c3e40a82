"""Named sweeps of the paper's cases, at sizes a 2-core CPU measures in minutes. One table:
SWEEPS[name] = {row name: (zoo model, config overrides, batch size)}."""
from __future__ import annotations

from effmetrics.models import build, example_input

_TEXT_SMALL = dict(dim=256, heads=4, mlp=1024, vocab=8000, max_len=128)

SWEEPS: dict = {
    # The paper's depth vs width study (ViT at 64px; widths at 64-dim heads, MLP 4x).
    "vit-depth-width": {
        f"vit d{d} w{w}": ("vit-b/16", dict(depth=d, dim=w, heads=w // 64, mlp=4 * w,
                                             image=64, patch=8), 4)
        for d in (2, 4, 8) for w in (128, 256, 384)
    },
    # Patch size at fixed width (the full ViT-S at 224px): FLOPs ~20x apart at ~equal params.
    "patch-size": {f"vit-s/{p}": ("vit-s/16", dict(patch=p), 1) for p in (32, 16, 8)},
    # Parameter sharing: the Universal Transformer applies one block as often as BERT has blocks.
    "sharing": {
        "bert 6 layers": ("bert-base", dict(depth=6, **_TEXT_SMALL), 4),
        "universal 6x1": ("ut-base", dict(depth=6, **_TEXT_SMALL), 4),
    },
    # Mixture of experts: parameters grow with experts, FLOPs per token stay.
    "moe": {
        f"switch {e} experts": ("switch-base-8", dict(depth=4, experts=e, **_TEXT_SMALL), 4)
        for e in (2, 8, 32)
    },
    # Conv nets vs ViT at 224: fewer FLOPs is not proportionally faster.
    "convnets": {
        "efficientnet-b0 (b8)": ("efficientnet-b0", {}, 8),
        "resnet-50 (b8)": ("resnet-50", {}, 8),
        "vit-s/16 (b8)": ("vit-s/16", {}, 8),
    },
}


def run(name: str, store: str, measure=("count", "time", "memory"), progress: bool = True,
        timing: dict | None = None, device: str = "cpu"):
    """Run a named sweep into store (skipping what it already holds)."""
    import effmetrics as em

    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; named sweeps: {', '.join(SWEEPS)}")
    rows = SWEEPS[name]
    df = None
    by_batch: dict = {}
    for row, (zoo, overrides, batch) in rows.items():
        by_batch.setdefault(batch, {})[row] = (zoo, overrides)
    for batch, configs in by_batch.items():
        df = em.sweep(configs, lambda c: build(c[0], **c[1]),
                      lambda c, bs: example_input(c[0], batch=bs, **c[1]),
                      measure=measure, store=store, batch_size=batch, progress=progress,
                      timing=timing or {"min_run_time": 0.1, "max_run_time": 1.0, "warmup": 1},
                      device=device, tag=name)
    return df[df["sweep"] == name].reset_index(drop=True)
