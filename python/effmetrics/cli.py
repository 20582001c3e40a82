"""The `effmetrics` command: profile, sweep, compare, report, match, demo.

    effmetrics profile vit-b/16 --input 1x3x224x224 --device meta
    effmetrics sweep vit-depth-width --store results.sqlite
    effmetrics compare results.sqlite --metrics params,flops,latency_median
    effmetrics report results.sqlite -o report.html
    effmetrics match vit-ti/16 --grid depth=2,4,6 --grid dim=96,192,288 --target-model vit-ti/16
    effmetrics demo
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import torch


class UsageError(Exception):
    """Bad arguments: printed with the usage hint, exit code 2."""


def _load_model(spec: str):
    from effmetrics.models import ZOO, build

    if spec in ZOO:
        return build(spec), spec
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"cannot load {spec!r}: {e}") from None
        return factory(), None
    raise UsageError(f"unknown model {spec!r}: a zoo name ({', '.join(sorted(ZOO))}) or "
                     "package.module:factory")


def _shape(spec: str) -> tuple:
    try:
        return tuple(int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input must look like 1x3x224x224; got {spec!r}") from None


def cmd_profile(args) -> int:
    import effmetrics as em
    from effmetrics.models import example_input

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"--dtype {args.dtype!r} is not a torch dtype (float32, bfloat16, ...)")
    with torch.device("meta" if args.device == "meta" else "cpu"):
        model, zoo = _load_model(args.model)
    if args.input:
        x = torch.randn(*_shape(args.input))
    elif zoo:
        x = example_input(zoo, batch=args.batch)
    else:
        raise UsageError("--input is required for a model that is not in the zoo")
    if x.is_floating_point():
        x = x.to(dtype)
    model = model.to(dtype=dtype)
    rep = em.profile(model, x, backward=args.backward, time=args.time, device=args.device)
    print(rep)
    if args.json:
        rep.to_json(args.json)
        print(f"\nwrote {args.json}")
    return 0


def cmd_sweep(args) -> int:
    from effmetrics.sweep import SWEEPS, run_named

    name, rows = args.name, None
    if os.path.exists(args.name):  # a config file: {"sweeps": {name: {row: [zoo, {..}, bs]}}}
        with open(args.name) as f:
            if args.name.endswith((".yaml", ".yml")):
                try:
                    import yaml
                except ImportError:
                    raise UsageError("YAML configs need PyYAML (pip install pyyaml), or use "
                                     "JSON") from None
                spec = yaml.safe_load(f)
            else:
                spec = json.load(f)
        named = (spec or {}).get("sweeps") or {}
        if not named:
            raise UsageError(f"{args.name} names no sweeps; write {{\"sweeps\": {{name: "
                             "{row: [zoo model, {overrides}, batch size]}}}")
        name, rows = list(named.items())[-1]  # the file's last sweep, as before
    elif args.name not in SWEEPS:
        raise UsageError(f"unknown sweep {args.name!r}; named sweeps: "
                         f"{', '.join(SWEEPS)} (or a JSON file)")
    df = run_named(name, args.store, measure=args.measure.split(","), rows=rows)
    print(df[["model", "params", "flops", "latency_median", "peak_memory_bytes"]].to_string())
    return 0


def cmd_compare(args) -> int:
    import effmetrics as em

    df = em.load(args.store)
    if args.sweep:
        df = df[df["sweep"] == args.sweep]
    metrics = args.metrics.split(",")
    cmp = em.compare(df[["model", *metrics]].drop_duplicates("model"), metrics)
    print("Kendall tau:\n" + cmp.rank_correlation.round(2).to_string())
    print("\nflips:\n" + (cmp.flips.to_string(index=False) if len(cmp.flips) else "none"))
    return 0


def cmd_report(args) -> int:
    import effmetrics as em
    from effmetrics.html import write_report

    write_report(em.load(args.store), args.output)
    print(f"wrote {args.output}")
    return 0


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _assignments(specs, option: str, many: bool) -> dict:
    out = {}
    for spec in specs or ():
        key, eq, values = spec.partition("=")
        if not eq or not key or not values:
            raise UsageError(f"{option} must look like depth=2,4,6; got {spec!r}")
        out[key] = [_value(v) for v in values.split(",")] if many else _value(values)
    return out


def cmd_match(args) -> int:
    import pandas as pd

    from effmetrics.match import match
    from effmetrics.models import ZOO, build, example_input

    if args.model not in ZOO:
        raise UsageError(f"unknown model {args.model!r}: a zoo name ({', '.join(sorted(ZOO))})")
    space = _assignments(args.grid, "--grid", many=True)
    if not space:
        raise UsageError("give the search space: --grid name=v1,v2,... (repeat for a grid)")
    if (args.target is None) == (args.target_model is None):
        raise UsageError("give one target: --target NUMBER (of --on) or --target-model NAME")
    if args.target_model is not None:
        if args.target_model not in ZOO:
            raise UsageError(f"unknown target model {args.target_model!r}: a zoo name "
                             f"({', '.join(sorted(ZOO))})")
        overrides = _assignments(args.target_set, "--target-set", many=False)
        with torch.device("meta"):
            ref = build(args.target_model, **overrides)
            x = example_input(args.target_model, **overrides)
        target = (ref.eval(), x)
    else:
        target = args.target
    df = match(args.model, space, target, on=args.on, tolerance=args.tolerance,
               hw=args.hw or None, store=args.store, progress=not args.quiet)
    print(f"{len(df)} of {df.attrs['tried']} configurations within {args.tolerance:.1%} of "
          f"{args.on} = {df.attrs['target']:.4g}")
    if len(df):
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(df.to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def cmd_demo(args) -> int:
    from effmetrics.demo_job import run_demo

    return run_demo(args.out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="effmetrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="count one model (a zoo name or package.module:factory)")
    p.add_argument("model")
    p.add_argument("--input", help="input shape, e.g. 1x3x224x224 (default: the zoo's input)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, meta, cuda[:i]")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backward", action="store_true")
    p.add_argument("--time", action="store_true")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(fn=cmd_profile)
    p = sub.add_parser("sweep", help="run a named sweep (or a JSON config) into a store")
    p.add_argument("name")
    p.add_argument("--store", default="results.sqlite")
    p.add_argument("--measure", default="count,time,memory")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("compare", help="rank correlations and flips of a store")
    p.add_argument("store")
    p.add_argument("--metrics", default="params,flops,latency_median")
    p.add_argument("--sweep")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("report", help="a self-contained HTML report of a store")
    p.add_argument("store")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("match", help="the configs of a zoo model that match a target's cost "
                                     "(counted on meta)")
    p.add_argument("model", help="zoo name whose config the grid overrides")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2,...",
                   help="a config field and its values (repeat: every combination)")
    p.add_argument("--target", type=float, help="the target value of --on")
    p.add_argument("--target-model", help="a zoo model whose cost is the target")
    p.add_argument("--target-set", action="append", metavar="NAME=VALUE",
                   help="a config override of the target model (repeatable)")
    p.add_argument("--on", default="flops", help="the cost to match (default flops)")
    p.add_argument("--tolerance", type=float, default=0.05, help="relative (default 0.05)")
    p.add_argument("--hw", action="append", help="add predicted latency on this hardware "
                   "preset (or cpu); repeatable")
    p.add_argument("--store", help="SQLite file: resume, counting only new configs")
    p.add_argument("--csv", help="also write the matches here")
    p.add_argument("--quiet", action="store_true", help="no per-config progress lines")
    p.set_defaults(fn=cmd_match)
    p = sub.add_parser("demo", help="the paper's cases on this machine: flips and a report")
    p.add_argument("--out", default="out")
    p.set_defaults(fn=cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (UsageError, ValueError, KeyError, TypeError, FileNotFoundError) as e:
        print(f"effmetrics {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
