"""em.match over a small ViT depth x width grid against a brute-force count written here (the
closed form of ORACLES.md, or em.profile per config), a reference-model target, resuming from a
store, the CLI, and bad input."""
import copy
import itertools
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import torch

import effmetrics as em
from effmetrics.models import vit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE, PATCH, CLASSES = 32, 8, 10
DEPTHS, DIMS = (1, 2, 3), (64, 128, 192)
SPACE = {"depth": list(DEPTHS), "dim": list(DIMS)}


def build(depth, dim):
    return vit("vit-ti/16", depth=depth, dim=dim, heads=dim // 32, mlp=4 * dim, image=IMAGE,
               patch=PATCH, classes=CLASSES)


def make_inputs(config):
    return torch.randn(1, 3, IMAGE, IMAGE)


def vit_params(D, L, M, P=PATCH, image=IMAGE, C=CLASSES):  # ORACLES.md
    T = (image // P) ** 2 + 1
    return (3 * P * P * D + D + D + T * D + L * (4 * D * D + 2 * D * M + 9 * D + M) + 2 * D
            + D * C + C)


def vit_matmul_macs(D, L, M, P=PATCH, image=IMAGE, C=CLASSES):  # ORACLES.md
    N = (image // P) ** 2
    T = N + 1
    return N * 3 * P * P * D + L * (3 * T * D * D + 2 * T * T * D + T * D * D + 2 * T * D * M) \
        + D * C


def within(value, target, tolerance):
    return abs(value - target) <= tolerance * target


def test_grid_returns_exactly_the_brute_force_matches():
    target, tolerance = 2 * vit_matmul_macs(128, 2, 512), 0.3
    expected = {(d, w) for d, w in itertools.product(DEPTHS, DIMS)
                if within(2 * vit_matmul_macs(w, d, 4 * w), target, tolerance)}
    assert 1 < len(expected) < len(DEPTHS) * len(DIMS)  # the test means something
    df = em.match(build, SPACE, target, on="flops_matmul", tolerance=tolerance,
                  make_inputs=make_inputs, progress=False)
    assert set(zip(df["depth"], df["dim"])) == expected
    assert df.attrs["tried"] == 9 and df.attrs["counted"] == 9
    for d, w, params, flops in zip(df["depth"], df["dim"], df["params"], df["flops_matmul"]):
        assert params == vit_params(w, d, 4 * w)
        assert flops == 2 * vit_matmul_macs(w, d, 4 * w)
    distance = [abs(f - target) / target for f in df["flops_matmul"]]
    assert list(df["distance"]) == pytest.approx(distance)
    assert distance == sorted(distance)
    # the other costs are there
    for column in ("params_applied", "params_touched", "flops", "macs", "bytes",
                   "activation_bytes"):
        assert (df[column] > 0).all(), column


def test_reference_model_target_counted_on_meta_and_left_alone():
    reference, x = build(2, 128), torch.randn(1, 3, IMAGE, IMAGE)
    weight = reference.head.weight.detach().clone()
    df = em.match(build, SPACE, (reference, x), on="flops", tolerance=0.25,
                  make_inputs=make_inputs, hw=["H100", em.HARDWARE["A100"]],
                  progress=False)
    # the target: the reference counted on meta, as the candidates are
    meta_ref = em.profile(copy.deepcopy(reference), x, device="meta")
    assert df.attrs["target"] == meta_ref.flops
    assert reference.head.weight.device.type == "cpu"
    assert torch.equal(reference.head.weight, weight)
    expected = set()
    for d, w in itertools.product(DEPTHS, DIMS):
        with torch.device("meta"):
            model = build(d, w)
        flops = em.profile(model, torch.empty(1, 3, IMAGE, IMAGE, device="meta")).flops
        if within(flops, meta_ref.flops, 0.25):
            expected.add((d, w))
    assert 1 < len(expected) < 9
    assert set(zip(df["depth"], df["dim"])) == expected
    assert df.iloc[0][["depth", "dim"]].tolist() == [2, 128] and df.iloc[0]["distance"] == 0
    # predicted latency per hardware: the per-op roofline of each config
    with torch.device("meta"):
        first = build(2, 128)
    assert df.iloc[0]["predicted_s_H100"] == pytest.approx(
        em.predict_latency(first, torch.empty(1, 3, IMAGE, IMAGE, device="meta"), hw="H100"))
    assert "predicted_s_NVIDIA A100 SXM 80GB" in df.columns


def test_a_killed_match_resumes_from_the_store(tmp_path):
    store = str(tmp_path / "m.sqlite")
    calls, fail_after = [], [4]

    def flaky_build(depth, dim):
        if len(calls) == fail_after[0]:
            raise RuntimeError("killed")
        calls.append((depth, dim))
        return build(depth, dim)

    kwargs = dict(on="flops", tolerance=0.3, make_inputs=make_inputs, store=store,
                  progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        em.match(flaky_build, SPACE, 1e7, **kwargs)
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT COUNT(*) FROM match_results").fetchone()[0] == 4
    first = list(calls)
    calls.clear()
    fail_after[0] = -1
    df = em.match(flaky_build, SPACE, 1e7, **kwargs)
    all_configs = list(itertools.product(DEPTHS, DIMS))
    assert calls == all_configs[4:] and first == all_configs[:4]  # only the rest counted
    assert df.attrs["tried"] == 9 and df.attrs["counted"] == 5
    # the same answer as a match without a store; a rerun counts nothing
    calls.clear()
    fresh = em.match(build, SPACE, 1e7, on="flops", tolerance=0.3, make_inputs=make_inputs,
                     progress=False)
    assert df.equals(fresh)
    again = em.match(flaky_build, SPACE, 1e7, **kwargs)
    assert calls == [] and again.attrs["counted"] == 0 and again.equals(fresh)


def test_progress_line_per_config(capsys):
    em.match(build, [{"depth": 1, "dim": 64}, {"depth": 2, "dim": 64}], 1e6, tolerance=10.0,
             make_inputs=make_inputs)
    err = capsys.readouterr().err
    assert "[1/2] {'depth': 1, 'dim': 64}: flops=" in err and "[2/2]" in err


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(space={"depth": 2}), TypeError, r"write \[2\]"),
    (dict(space={}), ValueError, "space is empty"),
    (dict(space="depth"), TypeError, "dict of lists"),
    (dict(on="latency"), ValueError, "choose one of params"),
    (dict(on="predicted_s_H100"), ValueError, "needs hw="),
    (dict(tolerance=-1), ValueError, "tolerance must be"),
    (dict(target=build(1, 64)), TypeError, r"pass target=\(model, inputs\)"),
    (dict(target=0), ValueError, "non-zero"),
    (dict(make_inputs=None), TypeError, "make_inputs is required"),
    (dict(build="vit-x/99"), ValueError, "unknown model 'vit-x/99'"),
])
def test_bad_input_says_what_to_do(kwargs, error, message):
    args = dict(build=build, space=SPACE, target=1e7, make_inputs=make_inputs, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        em.match(args.pop("build"), args.pop("space"), args.pop("target"), **args)


def test_match_command(tmp_path):
    store, out = str(tmp_path / "m.sqlite"), str(tmp_path / "m.csv")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "effmetrics", "match", "vit-ti/16", "--grid", "depth=1,2",
            "--grid", "dim=96,192", "--grid", "image=32", "--target-model", "vit-ti/16",
            "--target-set", "depth=2", "--target-set", "image=32", "--tolerance", "0.01",
            "--hw", "H100", "--store", store, "--csv", out]
    r = subprocess.run(args, env=env, text=True, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 of 4 configurations within 1.0% of flops" in r.stdout
    assert "[4/4] {'depth': 2, 'dim': 192, 'image': 32}" in r.stderr
    import pandas as pd

    df = pd.read_csv(out)
    assert df[["depth", "dim"]].values.tolist() == [[2, 192]] and "predicted_s_H100" in df
    with sqlite3.connect(store) as conn:
        configs = [json.loads(c) for (c,) in conn.execute("SELECT config FROM match_results")]
    assert len(configs) == 4
    bad = subprocess.run([*args[:5], "--grid", "depth"], env=env, text=True,
                         capture_output=True, timeout=300)
    assert bad.returncode == 2 and "--grid must look like depth=2,4,6" in bad.stderr
