"""compare(): where cost indicators disagree. Works on a table, never on models.

    cmp = em.compare(df, metrics=["params", "flops", "latency"])
    cmp.rank_correlation     # Kendall tau, metric x metric
    cmp.flips                # every pair of models ordered differently by two metrics
    print(cmp.summary())
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable

import pandas as pd

# Metrics where more is better (everything else is a cost: lower is better).
HIGHER_IS_BETTER = {"throughput", "items_per_s", "examples_per_s", "tokens_per_s", "quality",
                    "accuracy", "top1", "flops_per_s"}


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties in either variable handled), O(n^2): tables here are small."""
    concordant = discordant = ties_x = ties_y = 0
    pairs = list(zip(x, y))
    for (x1, y1), (x2, y2) in itertools.combinations(pairs, 2):
        dx, dy = (x1 > x2) - (x1 < x2), (y1 > y2) - (y1 < y2)
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


class Comparison:
    """The result of compare(): correlation tables, flips, Pareto frontiers, a summary."""

    def __init__(self, table: pd.DataFrame, metrics: list, quality: str | None,
                 lower_is_better: dict):
        self.table = table
        self.metrics = metrics
        self.quality = quality
        self.lower_is_better = lower_is_better
        cost = pd.DataFrame({m: table[m] if lower_is_better[m] else -table[m] for m in metrics})
        self._cost = cost
        self.rank_correlation = pd.DataFrame(
            [[kendall_tau(cost[a], cost[b]) for b in metrics] for a in metrics],
            index=metrics, columns=metrics)
        ranks = cost.rank()
        self.spearman = ranks.corr(method="pearson")
        self.flips = self._flips()
        self.pareto = self._pareto() if quality else {}

    def _repr_html_(self) -> str:
        """Jupyter: the rank correlations, shaded, and the flips."""
        from effmetrics.display import comparison_html

        return comparison_html(self)

    def _flips(self) -> pd.DataFrame:
        rows = []
        models = list(self.table.index)
        for m1, m2 in itertools.combinations(self.metrics, 2):
            for a, b in itertools.combinations(models, 2):
                d1 = self._cost.at[a, m1] - self._cost.at[b, m1]
                d2 = self._cost.at[a, m2] - self._cost.at[b, m2]
                if d1 * d2 < 0:  # strictly opposite orders
                    rows.append({"model_a": a, "model_b": b, "metric_x": m1, "metric_y": m2,
                                 "ratio_x": _ratio(self.table.at[a, m1], self.table.at[b, m1]),
                                 "ratio_y": _ratio(self.table.at[a, m2], self.table.at[b, m2])})
        return pd.DataFrame(rows, columns=["model_a", "model_b", "metric_x", "metric_y",
                                           "ratio_x", "ratio_y"])

    def _pareto(self) -> dict:
        """{metric: models on the frontier of (metric cost, quality)}, cheapest first."""
        q = self.table[self.quality]
        frontier = {}
        for m in self.metrics:
            cost = self._cost[m]
            keep = [a for a in self.table.index
                    if not any((cost[b] <= cost[a] and q[b] >= q[a])
                               and (cost[b] < cost[a] or q[b] > q[a])
                               for b in self.table.index if b != a)]
            frontier[m] = sorted(keep, key=lambda a: cost[a])
        return frontier

    def summary(self, gap: float = 1.5) -> str:
        """The disagreements in words: every flipped pair, then pairs that two metrics order
        alike but whose ratios differ by more than `gap`x (FLOPs 19x apart, latency 12x)."""
        lines = []
        for r in self.flips.itertuples():
            lines.append(f"{r.model_a} vs {r.model_b}: {r.metric_x} ratio {r.ratio_x:.3g}x but "
                         f"{r.metric_y} ratio {r.ratio_y:.3g}x; the two metrics rank them in "
                         "opposite order")
        t = self.table
        for m1, m2 in itertools.combinations(self.metrics, 2):
            for a, b in itertools.combinations(t.index, 2):
                r1, r2 = _ratio(t.at[b, m1], t.at[a, m1]), _ratio(t.at[b, m2], t.at[a, m2])
                if r1 <= 0 or r2 <= 0 or (r1 - 1) * (r2 - 1) <= 0:
                    continue  # a flip (listed above) or a tie
                if r1 < 1:  # phrase from the cheaper model's side
                    a, b, r1, r2 = b, a, 1 / r1, 1 / r2
                if max(r1, r2) / min(r1, r2) > gap:
                    lines.append(f"{a} has {r1:.3g}x less {m1} than {b}; {m2} ratio {r2:.3g}x")
        return "\n".join(lines) or "All metrics order the models alike, at similar ratios."

    def __repr__(self) -> str:
        return (f"Comparison({len(self.table)} models, metrics {self.metrics}, "
                f"{len(self.flips)} flips)")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def compare(df: pd.DataFrame, metrics: Iterable[str], quality: str | None = None,
            lower_is_better: dict | Iterable[str] | None = None) -> Comparison:
    """Compare models (named by a `model` column, else the index) across metrics.

    Every metric is a cost (lower is better) unless its name is a known rate (throughput,
    tokens_per_s, ...) or `lower_is_better` says otherwise: a dict {metric: bool}, or the names
    of the lower-is-better metrics (the rest are then higher-is-better).
    """
    table = df.set_index("model") if "model" in df.columns else df
    metrics = list(metrics)
    missing = [m for m in metrics + ([quality] if quality else []) if m not in table.columns]
    if missing:
        raise KeyError(f"compare: no column {missing} in the table; it has "
                       f"{', '.join(map(str, table.columns))}")
    if len(metrics) < 2:
        raise ValueError("compare needs at least two metrics to find where they disagree")
    if table.index.duplicated().any():
        raise ValueError("compare: model names must be unique (aggregate repeated runs first)")
    if isinstance(lower_is_better, dict):
        direction = {m: lower_is_better.get(m, m not in HIGHER_IS_BETTER) for m in metrics}
    elif lower_is_better is not None:
        lower = set(lower_is_better)
        direction = {m: m in lower for m in metrics}
    else:
        direction = {m: m not in HIGHER_IS_BETTER for m in metrics}
    return Comparison(table[metrics + ([quality] if quality else [])].astype(float), metrics,
                      quality, direction)
