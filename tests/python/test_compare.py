"""compare() on tables built here: known Kendall tau, every flip found, no false flip."""
import pandas as pd
import pytest

import effmetrics as em


@pytest.fixture
def table():
    return pd.DataFrame({
        "model": ["A", "B", "C", "D"],
        "params": [10, 20, 30, 40],
        "flops": [100, 50, 25, 10],  # exactly reversed from params
        "latency": [5.0, 6.0, 4.0, 8.0],
        "quality": [0.70, 0.75, 0.80, 0.79],
    })


def test_rank_correlation_and_flips(table):
    cmp = em.compare(table, metrics=["params", "flops", "latency"])
    tau = cmp.rank_correlation
    assert tau.loc["params", "flops"] == pytest.approx(-1.0)
    # params vs latency: 4 concordant, 2 discordant pairs; flops vs latency: 2 and 4
    assert tau.loc["params", "latency"] == pytest.approx(1 / 3)
    assert tau.loc["flops", "latency"] == pytest.approx(-1 / 3)
    flips = cmp.flips
    assert len(flips.query("metric_x == 'params' and metric_y == 'flops'")) == 6
    pl = flips.query("metric_x == 'params' and metric_y == 'latency'")
    assert set(zip(pl.model_a, pl.model_b)) == {("A", "C"), ("B", "C")}
    assert len(flips.query("metric_x == 'flops' and metric_y == 'latency'")) == 4
    assert len(flips) == 12
    ac = pl[(pl.model_a == "A") & (pl.model_b == "C")].iloc[0]
    assert ac.ratio_x == pytest.approx(10 / 30) and ac.ratio_y == pytest.approx(5 / 4)
    assert "A vs C" in cmp.summary()
    assert cmp.spearman.loc["params", "flops"] == pytest.approx(-1.0)


def test_higher_is_better_metrics_do_not_flip_with_their_cost(table):
    table["throughput"] = 1 / table["latency"]
    cmp = em.compare(table, metrics=["latency", "throughput"])
    assert cmp.flips.empty
    assert cmp.rank_correlation.loc["latency", "throughput"] == pytest.approx(1.0)
    assert cmp.summary() == "All metrics order the models alike, at similar ratios."
    explicit = em.compare(table, metrics=["latency", "throughput"],
                          lower_is_better={"throughput": True})
    assert len(explicit.flips) == 6


def test_summary_names_ratio_gaps_without_flips():
    df = pd.DataFrame({"model": ["vit-s/32", "vit-s/8"], "params": [22.9e6, 22.0e6],
                       "flops": [1.15e9, 22.4e9], "latency": [0.01, 0.12]})
    text = em.compare(df, ["flops", "latency", "params"]).summary()
    assert "vit-s/32 has 19.5x less flops than vit-s/8; latency ratio 12x" in text
    assert "flops ratio" in text  # params vs flops: a flip (params 22.9M > 22.0M), listed too


def test_pareto_frontier_with_quality(table):
    cmp = em.compare(table, metrics=["params", "latency"], quality="quality")
    assert cmp.pareto["latency"] == ["C"]  # fastest and best
    assert cmp.pareto["params"] == ["A", "B", "C"]  # D: more params than C, lower quality


def test_bad_tables_name_the_problem(table):
    with pytest.raises(KeyError, match="no column"):
        em.compare(table, metrics=["params", "energy"])
    with pytest.raises(ValueError, match="at least two"):
        em.compare(table, metrics=["params"])
    with pytest.raises(ValueError, match="unique"):
        em.compare(pd.concat([table, table]), metrics=["params", "flops"])
