"""effmetrics: every efficiency cost indicator of a model in one pass.

    import effmetrics as em
    rep = em.profile(model, x)              # FLOPs, MACs, bytes, params per op and module
    print(rep)                              # per-module table
    rep.by_module(), rep.by_op()            # pandas DataFrames

See README.md for the counting conventions.
"""
import torch  # noqa: F401  (loads libtorch before the extension that links it)

from effmetrics import _C  # noqa: F401
from effmetrics.compare import Comparison, compare
from effmetrics.counter import Counter
from effmetrics.distributed import gather
from effmetrics.match import match
from effmetrics.params import ParamCount, count_params
from effmetrics.pipeline import pipeline_bubble
from effmetrics.predict import predict_latency, predict_ops
from effmetrics.profiler import profile
from effmetrics.report import Report
from effmetrics.roofline import HARDWARE, Hardware, calibrate_cpu, roofline
from effmetrics.rules import TensorArg, register_rule, rules, unregister_rule
from effmetrics.sweep import load, sweep
from effmetrics.timing import Timing, benchmark, throughput

__version__ = "0.1.0"
__all__ = ["HARDWARE", "Comparison", "Counter", "Hardware", "ParamCount", "Report", "TensorArg",
           "Timing", "benchmark", "calibrate_cpu", "compare", "count_params", "gather", "load",
           "match", "pipeline_bubble", "predict_latency", "predict_ops", "profile",
           "register_rule", "roofline", "rules", "sweep", "throughput", "unregister_rule"]
