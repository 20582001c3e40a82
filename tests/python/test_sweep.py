"""sweep(): one SQLite row per configuration, resumable after SIGKILL, readable by sqlite3."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import effmetrics as em
from effmetrics.models import ViT, ViTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {f"vit-d{d}": {"dim": d, "depth": 1, "heads": 2, "mlp": 2 * d, "patch": 8,
                         "image": 16, "classes": 10} for d in (16, 32, 48)}


def build(config):
    return ViT(ViTConfig(**config))


def make_inputs(config, batch_size):
    return torch.randn(batch_size, 3, config["image"], config["image"])


def test_sweep_stores_every_measure(tmp_path):
    store = str(tmp_path / "r.sqlite")
    df = em.sweep(CONFIGS, build, make_inputs, store=store, batch_size=2, progress=False,
                  timing={"min_run_time": 0.01, "warmup": 1})
    assert sorted(df["model"]) == sorted(CONFIGS)
    for name, config in CONFIGS.items():
        row = df[df["model"] == name].iloc[0]
        model = build(config)
        rep = em.profile(model, make_inputs(config, 2))
        assert row["params"] == rep.params.total and row["flops"] == rep.flops
        assert row["latency_median"] > 0 and row["throughput"] == pytest.approx(
            2 / row["latency_median"])
        assert row["activation_bytes"] > 0 and row["peak_memory_bytes"] > 0
        assert row["device"] == "cpu" and row["dtype"] == "float32" and row["batch_size"] == 2
        assert row["torch_version"] == torch.__version__ and row["hardware"]
    # a rerun skips what is stored
    before = em.load(store)["created"].tolist()
    em.sweep(CONFIGS, build, make_inputs, store=store, batch_size=2, progress=False)
    assert em.load(store)["created"].tolist() == before


def test_count_only_sweep_runs_on_meta(tmp_path):
    store = str(tmp_path / "c.sqlite")
    df = em.sweep({"vit-b/16": {}}, lambda c: em.models.build("vit-b/16"),
                  lambda c, bs: torch.empty(bs, 3, 224, 224), measure=["count"], store=store,
                  progress=False)
    assert df.iloc[0]["macs"] >= 17_563_828_224 and df.iloc[0]["params"] == 86_567_656
    assert df.iloc[0]["latency_median"] is None or df["latency_median"].isna().all()


def test_store_schema_reads_with_plain_sqlite(tmp_path):
    store = str(tmp_path / "s.sqlite")
    em.sweep({"vit-d16": CONFIGS["vit-d16"]}, build, make_inputs, measure=["count"],
             store=store, progress=False)
    with sqlite3.connect(store) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        flops = conn.execute("SELECT flops FROM results WHERE model='vit-d16'").fetchone()[0]
    assert cols[:4] == ["model", "device", "dtype", "batch_size"] and "activation_bytes" in cols
    assert mode == "wal" and flops > 0


def test_sweep_resumes_after_sigkill(tmp_path):
    store = str(tmp_path / "k.sqlite")
    script = textwrap.dedent(f"""
        import time, torch, effmetrics as em
        from effmetrics.models import ViT, ViTConfig
        configs = {{f"m{{i}}": {{"dim": 16, "depth": 1, "heads": 2, "mlp": 32, "patch": 8,
                                 "image": 16, "classes": 10 + i}} for i in range(4)}}
        def build(c):
            time.sleep(0.8)  # slow enough to be killed mid-sweep
            return ViT(ViTConfig(**c))
        em.sweep(configs, build, lambda c, bs: torch.randn(bs, 3, 16, 16), measure=["count"],
                 store={store!r}, progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 60
    rows = 0
    while time.time() < deadline and rows < 2:
        time.sleep(0.1)
        if os.path.exists(store):
            try:
                with sqlite3.connect(store) as conn:
                    rows = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= rows < 4, rows  # killed mid-sweep
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    df = em.load(store)
    assert sorted(df["model"]) == ["m0", "m1", "m2", "m3"]  # every row, once


TINY_GRID = {f"d{d} w{w}": ["vit-b/16", {"depth": d, "dim": w, "heads": 1, "mlp": 2 * w,
                                          "image": 16, "patch": 8}, 1]
             for d in (1, 2) for w in (16, 32)}


def test_run_named_takes_rows_and_leaves_the_table_alone(tmp_path):
    from effmetrics.sweep import SWEEPS, run_named

    known = {k: dict(v) for k, v in SWEEPS.items()}
    df = run_named("my-grid", str(tmp_path / "g.sqlite"), measure=["count"], progress=False,
                   rows=TINY_GRID)
    assert sorted(df["model"]) == sorted(TINY_GRID) and set(df["sweep"]) == {"my-grid"}
    assert SWEEPS == known
    with pytest.raises(ValueError, match="unknown sweep 'my-grid'; named sweeps: vit-depth"):
        run_named("my-grid", str(tmp_path / "g.sqlite"))
    with pytest.raises(ValueError, match=r"row 'x'.*is not \[zoo model"):
        run_named("bad", str(tmp_path / "g.sqlite"), rows={"x": ["vit-b/16", {}]})


def test_config_columns_and_the_depth_width_figure_for_any_sweep(tmp_path):
    from effmetrics import plots
    from effmetrics.html import render
    from effmetrics.sweep import config_columns, run_named

    store = str(tmp_path / "c.sqlite")
    em.sweep(CONFIGS, build, make_inputs, measure=["count"], store=store, progress=False)
    run_named("my-grid", store, measure=["count"], progress=False, rows=TINY_GRID)
    df = config_columns(em.load(store))
    user = df[df["sweep"].isna()].set_index("model")
    assert user.loc["vit-d32", "dim"] == 32 and user.loc["vit-d32", "classes"] == 10
    assert plots.depth_width_rows(df[df["sweep"].isna()]) is None  # depth does not vary
    grid = plots.depth_width_rows(df[df["sweep"] == "my-grid"]).set_index("model")
    assert grid.loc["d2 w32", ["depth", "width"]].tolist() == [2, 32]
    page = render(em.load(store))
    assert page.count('style="max-width:98%"') == 1  # the depth/width figure, for my-grid only


def test_magnitude_prune_zeroes_the_smallest_weights():
    from effmetrics.models import magnitude_prune

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    before = lin.weight.detach().abs().clone()
    magnitude_prune(lin, 0.5)
    w = lin.weight.detach()
    assert int((w == 0).sum()) == 64  # half of 8 x 16
    assert before[w == 0].max() <= before[w != 0].min()  # the smallest magnitudes went
    lin = torch.nn.Linear(16, 8)
    magnitude_prune(lin, "2:4")
    groups = (lin.weight.detach() == 0).reshape(8, 4, 4).sum(-1)
    assert (groups == 2).all()  # two zeros in every group of four along the input
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\) or '2:4'"):
        magnitude_prune(lin, 1.5)


def test_sparsity_sweep_counts_effective_flops_from_the_zeros(tmp_path):
    """Every Linear of the ViT is pruned to exactly half zeros (50% and 2:4): the effective
    FLOPs lose half of the Linear layers' matmul FLOPs (aten::addmm, counted on the dense model
    here) and nothing else; FLOPs and params stay."""
    from effmetrics.models import build as zoo_build
    from effmetrics.models import example_input
    from effmetrics.sweep import effective_columns, run_named

    small = dict(depth=2, image=32, patch=8, dim=64, heads=2, mlp=128)
    rows = {f"vit {name}": ("vit-s/16", dict(small, prune=p), 2)
            for name, p in (("dense", 0.0), ("half", 0.5), ("2:4", "2:4"))}
    df = run_named("sparsity", str(tmp_path / "s.sqlite"), measure=("count",), progress=False,
                   rows=rows).set_index("model")
    dense = em.profile(zoo_build("vit-s/16", **small).eval(),
                       example_input("vit-s/16", batch=2, **small))
    addmm = int(dense.by_op().loc["aten::addmm", "flops"])
    assert (df["flops"] == dense.flops).all() and (df["params"] == dense.params.total).all()
    linear = sum(m.weight.numel() for m in zoo_build("vit-s/16", **small).modules()
                 if isinstance(m, torch.nn.Linear))
    for row in ("vit half", "vit 2:4"):
        assert df.loc["vit dense", "flops"] - df.loc[row, "flops_effective"] == addmm // 2
        # half of every Linear weight zeroed (a random init has no exact zeros to start with)
        assert df.loc["vit dense", "params_nonzero"] - df.loc[row, "params_nonzero"] == \
            linear // 2
    assert effective_columns(df.reset_index()) == ["params_nonzero", "flops_effective"]


def test_demo_prints_predicted_next_to_measured_latency(tmp_path, capsys):
    """make demo's last table: every timed row of the store with its per-op roofline
    prediction (counted on meta: the same figure em.predict_latency gives), and the rank
    correlations."""
    from effmetrics.demo_job import _predicted_vs_measured
    from effmetrics.models import build as zoo_build
    from effmetrics.models import example_input
    from effmetrics.sweep import run_named

    small = dict(depth=1, image=32, patch=8, dim=32, heads=2, mlp=64)
    rows = {f"vit p{p}": ("vit-s/16", dict(small, patch=p), 1) for p in (8, 16)}
    df = run_named("tiny", str(tmp_path / "s.sqlite"), measure=("count", "time"),
                   progress=False, rows=rows)
    _predicted_vs_measured(df)
    out = capsys.readouterr().out
    assert "2 models" in out and "Spearman rank correlation with measured latency" in out
    expected = em.predict_latency(zoo_build("vit-s/16", **dict(small, patch=16)),
                                  example_input("vit-s/16", batch=1, **dict(small, patch=16)),
                                  hw="cpu")
    line = next(ln for ln in out.splitlines() if "tiny: vit p16" in ln)
    assert float(line.split()[-1]) == pytest.approx(expected, rel=1e-3)  # 4 digits printed
