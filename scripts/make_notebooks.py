"""Writes the two notebooks from the cells below (kept here so that they diff as code), and
with --execute runs them at full size so that the committed notebooks carry real outputs.

    python scripts/make_notebooks.py [--execute]
"""
import os
import sys
import tempfile

import nbformat as nbf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """import os
import torch
import effmetrics as em
from effmetrics import plots
from effmetrics.sweep import run_named
# EFFMETRICS_NOTEBOOK_SMALL=1 (the tests): tiny sizes, seconds not minutes
SMALL = os.environ.get("EFFMETRICS_NOTEBOOK_SMALL") == "1"
STORE = os.environ.get("EFFMETRICS_NOTEBOOK_STORE", "notebook_results.sqlite")
TIMING = {"min_run_time": 0.02 if SMALL else 0.2, "max_run_time": 0.3 if SMALL else 2.0}"""

DEPTH_WIDTH = [
    ("md", "# ViT depth vs width\n\nThe Efficiency Misnomer's scaling study: deep-narrow and "
           "wide-shallow ViTs with similar parameter counts differ in FLOPs, and more in "
           "measured latency and throughput, because depth serialises work that width can "
           "run in parallel."),
    ("code", SETUP),
    ("code", """depths, widths = ((1, 2), (64, 128)) if SMALL else ((2, 4, 8), (128, 256, 384))
grid = {f"vit d{d} w{w}": ("vit-b/16", dict(depth=d, dim=w, heads=w // 64, mlp=4 * w,
                                             image=32 if SMALL else 64, patch=8), 2)
        for d in depths for w in widths}
df = run_named("notebook-depth-width", STORE, timing=TIMING, progress=False, rows=grid)
df = plots.depth_width_rows(df)  # depth and width (the config's dim) as columns
df[["model", "depth", "width", "params", "flops", "latency_median", "throughput"]]"""),
    ("code", """plots.depth_width(df, ("params", "flops", "latency_median"));"""),
    ("md", "## Where the indicators disagree\n\nKendall's tau between the metrics, and every "
           "pair of models that two metrics order differently."),
    ("code", """cmp = em.compare(df[["model", "params", "flops", "latency_median", "throughput"]],
                 ["params", "flops", "latency_median", "throughput"])
cmp  # Kendall's tau (shaded) and the flips"""),
    ("md", "## One model, every indicator\n\nThe widest-deepest ViT of the grid, profiled with "
           "time: the module tree with each module's share of FLOPs, bytes and time."),
    ("code", """from effmetrics.models import build, example_input
zoo, config, batch = grid[df["model"].iloc[-1]]
model = build(zoo, **config).eval()
x = example_input(zoo, batch=batch, **config)
with torch.no_grad():
    rep = em.profile(model, x, time=True)
rep"""),
    ("code", """em.benchmark(model, x, **TIMING)"""),
]

INDICATORS = [
    ("md", "# Cost indicators disagree\n\nThe paper's seed cases on this machine: parameter "
           "sharing, mixture of experts, patch size, and conv nets vs ViT, with a roofline to "
           "explain the measured speed."),
    ("code", SETUP),
    ("code", """for name in ("sharing", "moe"):
    t = run_named(name, STORE, timing=TIMING, progress=False)
    print(t[["model", "params", "flops", "latency_median"]].to_string(index=False))"""),
    ("md", "Patch size: FLOPs ~20x apart at equal parameters (counted on `meta`, no memory)."),
    ("code", """from effmetrics.models import build, example_input
rows = []
for p in (32, 16, 8):
    with torch.device("meta"):
        m = build("vit-s/16", patch=p)
    r = em.profile(m, example_input("vit-s/16", device="meta"))
    rows.append((f"vit-s/{p}", r.params.total, r.macs_matmul / 1e9))
rows"""),
    ("md", "Conv nets vs ViT: EfficientNet has the fewest FLOPs; its depthwise convolutions move "
           "many bytes per FLOP, so it runs far below the CPU's matmul peak (roofline)."),
    ("code", """hw = em.calibrate_cpu()
for name in ("efficientnet-b0", "resnet-50"):
    model = build(name).eval()
    x = example_input(name, batch=1, image=64 if SMALL else 224)
    with torch.no_grad():
        rep = em.profile(model, x, time=True)
    t = em.roofline(rep, hw)
    print(name, f"{rep.flops / 1e9:.2f} GFLOPs", f"intensity {rep.intensity:.1f} FLOP/B",
          f"achieved {rep.flops / rep.time_s / 1e9:.1f} GFLOP/s",
          f"predicted/measured {t.loc['', 'achieved_fraction']:.2f}")"""),
    ("md", "A training loop under `em.Counter`: counts per step, busy and idle time (on a GPU, "
           "the device's, from CUDA events), throughput."),
    ("code", """model = build("vit-ti/16", depth=2, image=64 if SMALL else 128).train()
x = example_input("vit-ti/16", batch=4, image=64 if SMALL else 128)
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
with em.Counter(model) as c:
    for _ in range(4):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
        c.step(examples=len(x))
c"""),
    ("md", "## The Perceiver IO situation: matched on FLOPs, not on anything else\n\nPerceiver IO "
           "compares itself with a BERT that reads UTF-8 bytes (2048 of them, where BERT-Base "
           "reads 512 wordpieces) and is matched to BERT-Base on FLOPs. `em.match` counts every "
           "configuration of a depth x width grid on `meta` and keeps those within 15% of "
           "BERT-Base's FLOPs: to pay for 4x the tokens they give up most of the parameters, "
           "and they hold more activations and are predicted slower (per-op roofline)."),
    ("code", """from effmetrics.match import perceiver_io_case

# byte_bert(depth, dim) (effmetrics.models): BERT over UTF-8 bytes, vocabulary 262, 2048
# positions; each config of the grid counted on meta, matched to BERT-Base (512 tokens) on FLOPs
matched = perceiver_io_case(small=SMALL, hw=("H100", "cpu"))
ref = matched.attrs["reference"]
print(f"BERT-Base at 512 tokens: {ref['params'] / 1e6:.1f}M params, {ref['flops'] / 1e9:.1f} "
      f"GFLOPs, predicted {ref['predicted_s_H100'] * 1e3:.2f} ms on an H100; "
      f"{len(matched)} of {matched.attrs['tried']} byte-level configs within 15% of its FLOPs")
matched[["depth", "dim", "params", "params_lost", "flops", "activation_bytes",
         "predicted_s_H100", "predicted_s_cpu", "relative_diff"]]"""),
]


def write(cells, path, execute=False):
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in cells]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids: regenerating changes only what changed
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    if execute:
        from nbclient import NotebookClient

        with tempfile.TemporaryDirectory() as tmp:  # the results store of the run stays here
            NotebookClient(nb, timeout=1800, kernel_name="python3",
                           resources={"metadata": {"path": tmp}}).execute()
    nbf.write(nb, path)


if __name__ == "__main__":
    execute = "--execute" in sys.argv[1:]
    write(DEPTH_WIDTH, os.path.join(ROOT, "notebooks", "vit_depth_width_sweep.ipynb"), execute)
    write(INDICATORS, os.path.join(ROOT, "notebooks", "cost_indicators_disagree.ipynb"), execute)
