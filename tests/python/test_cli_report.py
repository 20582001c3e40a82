"""The effmetrics command, the HTML report (rendered in headless Chromium) and the seed cases
as the named sweeps measure them."""
import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import pytest
import torch

import effmetrics as em
from effmetrics.html import write_report
from effmetrics.models import build, example_input
from effmetrics.sweep import run_named

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-m", "effmetrics", *args], env=env, text=True,
                       capture_output=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_profile_command_writes_json(tmp_path):
    out = tmp_path / "r.json"
    r = cli("profile", "vit-b/16", "--device", "meta", "--json", str(out))
    assert "blocks" in r.stdout and "GFLOP" in r.stdout
    data = json.loads(out.read_text())
    assert data["params"]["total"] == 86_567_656
    assert data["total"]["macs_matmul"] == 17_563_828_224


@pytest.mark.parametrize("args, message", [
    (["profile", "vit-x/99"], "unknown model 'vit-x/99'"),
    (["profile", "vit-b/16", "--input", "1by3"], "--input must look like"),
    (["profile", "vit-b/16", "--dtype", "float7"], "is not a torch dtype"),
    (["sweep", "no-such-sweep"], "unknown sweep"),
    (["compare", "/nonexistent.sqlite"], "no results store"),
])
def test_bad_arguments_exit_2_with_the_fix(args, message):
    r = cli(*args, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert cli("frobnicate", check=False).returncode == 2  # argparse's own usage error


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("store") / "s.sqlite")
    timing = {"min_run_time": 0.02, "max_run_time": 0.3, "warmup": 1}
    for name in ("patch-size", "sharing", "moe"):
        run_named(name, path, progress=False, timing=timing)
    return path


def test_seed_cases_hold(store):
    df = em.load(store)
    patch = df[df.sweep == "patch-size"].set_index("model")
    s32, s8 = patch.loc["vit-s/32"], patch.loc["vit-s/8"]
    assert 18 < s8.flops / s32.flops < 21 and abs(s8.params / s32.params - 1) < 0.05
    share = df[df.sweep == "sharing"].set_index("model")
    bert, ut = share.loc["bert 6 layers"], share.loc["universal 6x1"]
    assert ut.params < bert.params / 2 and ut.flops == bert.flops
    moe = df[df.sweep == "moe"].set_index("model")
    assert moe.loc["switch 32 experts", "params"] > 5 * moe.loc["switch 2 experts", "params"]
    # the comparison reports the measured order, whatever this machine measures
    cmp = em.compare(df[df.sweep == "moe"][["model", "params", "latency_median"]],
                     ["params", "latency_median"])
    lat = moe["latency_median"]
    for r in cmp.flips.itertuples():
        assert (lat[r.model_a] < lat[r.model_b]) != (moe.params[r.model_a] < moe.params[r.model_b])


def test_efficientnet_fewer_flops_lower_throughput_per_flop():
    # The DeiT observation at CPU scale: count on meta, measure a small batch.
    reps, speed = {}, {}
    for name in ("efficientnet-b0", "resnet-50"):
        model = build(name).eval()
        x = example_input(name, batch=2)
        with torch.no_grad():
            reps[name] = em.profile(model, x)
        speed[name] = em.benchmark(model, x, min_run_time=0.1, max_run_time=1.0, warmup=1)
    eff, res = reps["efficientnet-b0"], reps["resnet-50"]
    assert eff.flops < res.flops / 5
    per_flop = {n: reps[n].flops / speed[n].median for n in reps}  # achieved FLOP/s
    print(f"achieved GFLOP/s: EfficientNet-B0 {per_flop['efficientnet-b0'] / 1e9:.1f}, "
          f"ResNet-50 {per_flop['resnet-50'] / 1e9:.1f}")
    assert eff.intensity < res.intensity


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_sweep_command_reads_a_config_file(tmp_path, suffix):
    rows = {"tiny a": ["vit-b/16", {"depth": 1, "dim": 64, "heads": 1, "mlp": 128, "image": 32,
                                    "patch": 8}, 1],
            "tiny b": ["vit-b/16", {"depth": 2, "dim": 64, "heads": 1, "mlp": 128, "image": 32,
                                    "patch": 8}, 1]}
    config = tmp_path / f"sweep{suffix}"
    spec = {"sweeps": {"my-sweep": rows}}
    if suffix == ".json":
        config.write_text(json.dumps(spec))
    else:
        import yaml

        config.write_text(yaml.safe_dump(spec))
    store = tmp_path / "s.sqlite"
    r = cli("sweep", str(config), "--store", str(store), "--measure", "count")
    assert "tiny a" in r.stdout and "tiny b" in r.stdout
    df = em.load(str(store))
    assert set(df["model"]) == {"tiny a", "tiny b"} and set(df["sweep"]) == {"my-sweep"}


def test_compare_and_report_commands(store, tmp_path):
    r = cli("compare", store, "--sweep", "moe", "--metrics", "params,flops,latency_median")
    assert "Kendall tau" in r.stdout and "flips" in r.stdout
    html_path = tmp_path / "report.html"
    cli("report", store, "-o", str(html_path))
    text = html_path.read_text()
    assert text.count("<table") >= 3 and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text  # self-contained


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium not installed: `make test` installs Debian's chromium")


def test_report_renders_in_headless_chromium(store, tmp_path):
    html_path = write_report(em.load(store), str(tmp_path / "report.html"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                    f"file://{html_path}"], check=True, timeout=120, capture_output=True)
    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels.std() > 0.05  # not blank
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{html_path}"], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    assert dom.count("<table") >= 3 and "rank flips" in dom


def test_report_shows_the_perceiver_io_situation(tmp_path):
    """The HTML report's matched section: BERT-Base's parameters and every byte-level config
    within 15% of its FLOPs, the parameters each gives up."""
    from effmetrics.match import perceiver_io_case

    matched = perceiver_io_case(small=True)
    bert_base = 109_482_240  # published (ORACLES.md), pinned in test_zoo.py
    assert matched.attrs["reference"]["params"] == bert_base
    assert (matched["relative_diff"].abs() <= 0.15).all() and len(matched) >= 1
    assert (matched["params_lost"] == 1 - matched["params"] / bert_base).all()
    run_named("patch-size", str(tmp_path / "s.sqlite"), measure=("count",), progress=False)
    path = write_report(em.load(str(tmp_path / "s.sqlite")), str(tmp_path / "r.html"),
                        matched=matched)
    html = open(path).read()
    assert "Matched on FLOPs: the Perceiver IO situation" in html
    assert f"{bert_base:,} parameters" in html
    for params in matched["params"]:
        assert f"{params:,}" in html
