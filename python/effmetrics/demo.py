"""`python -m effmetrics.demo`: profile a built-in ViT and print its report.

Until the analysis tools land this is the main job of `make demo`: ViT-B/16 at 224 counted on
`meta` (no memory, any machine), then a ViT-Ti/16 forward+backward measured on the CPU.
"""
from __future__ import annotations

import argparse
import sys

import torch

import effmetrics as em
from effmetrics.models import VIT_CONFIGS, vit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effmetrics.demo", description=__doc__)
    parser.add_argument("--model", default="vit-b/16", choices=sorted(VIT_CONFIGS))
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)

    config = VIT_CONFIGS[args.model]
    with torch.device("meta"):
        model = vit(args.model)
    images = torch.empty(args.batch, 3, config.image, config.image, device="meta")
    rep = em.profile(model, images)
    print(f"== {args.model} @ {config.image}px, batch {args.batch}, forward, on meta ==")
    print(rep)
    print(f"\nmatmul-class MACs: {rep.macs_matmul:,}  (paper's 'FLOPs' for ViT-B/16: 17.56 G)")

    small = vit("vit-ti/16", image=64, depth=4)
    rep = em.profile(small, torch.randn(2, 3, 64, 64), backward=True)
    print("\n== vit-ti/16 (4 blocks, 64px), batch 2, forward + backward, on cpu ==")
    print(rep)
    print("\ntop ops:")
    print(rep.by_op()[["kind", "calls", "flops", "bytes_read", "intensity"]].head(8).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
