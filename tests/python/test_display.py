"""effmetrics.display: HTML for Jupyter. Expected values come from the layer shapes, not from
the report being rendered."""
import ast
import re
from collections import OrderedDict
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import effmetrics as em
from effmetrics.display import comparison_html, report_html, summary_html, timing_html


class _Rows(HTMLParser):
    """Rows of the module table: {qualified name: {"text": [cell texts], "bars": {kind: %}}}."""

    def __init__(self):
        super().__init__()
        self.rows, self.row, self.cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-module" in a:
            self.row = {"text": [], "bars": {}}
            self.rows[a["data-module"]] = self.row
        elif self.row is not None and tag == "td":
            self.cell = ""
        elif self.row is not None and "em-fill" in (a.get("class") or ""):
            kind = a["class"].split()[-1].removeprefix("em-")
            self.row["bars"][kind] = float(re.search(r"width:([\d.]+)%", a["style"])[1])

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.row["text"].append(self.cell.strip())
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def rows_of(text: str) -> dict:
    p = _Rows()
    p.feed(text)
    return p.rows


def mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def depth(name: str) -> int:
    return 0 if name == "" else name.count(".") + 1


def test_every_module_appears_with_its_short_name():
    model = mlp()
    text = report_html(em.profile(model, torch.randn(2, 8)))
    rows = rows_of(text)
    for name in dict(model.named_modules()):
        assert name in rows
        assert rows[name]["text"][0] == ("(model)" if name == "" else name.rsplit(".", 1)[-1])
    assert "<script" not in text and "http" not in text


def test_flops_and_bytes_bars_are_shares_of_the_whole_model():
    model, batch = mlp(), 2
    # matmul FLOPs 2*B*in*out per Linear (the bias add rides in addmm), B*16 for the ReLU
    flops = {"0": 2 * batch * 8 * 16, "1": batch * 16, "2": 2 * batch * 16 * 4}
    # fp32 bytes, no cache: a Linear reads input, weight and bias and writes its output
    moved = {"0": 4 * (batch * 8 + 8 * 16 + 16 + batch * 16),
             "1": 4 * (batch * 16 + batch * 16),
             "2": 4 * (batch * 16 + 16 * 4 + 4 + batch * 4)}
    rows = rows_of(report_html(em.profile(model, torch.randn(batch, 8))))
    for name in flops:
        share = 100 * flops[name] / sum(flops.values())
        assert rows[name]["bars"]["flops"] == pytest.approx(share, abs=0.01)
        assert f"{share:.1f}%" in rows[name]["text"]
        share = 100 * moved[name] / sum(moved.values())
        assert rows[name]["bars"]["bytes"] == pytest.approx(share, abs=0.01)
    assert rows[""]["bars"] == {"flops": 100.0, "bytes": 100.0}  # not timed: no time bar


def test_rows_beyond_max_depth_and_max_rows_are_hidden_with_a_note():
    model = nn.Sequential(nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Tanh())), nn.ReLU())
    rep = em.profile(model, torch.randn(3, 4))
    names = dict(model.named_modules())
    for max_depth in (1, 2):
        rows = rows_of(report_html(rep, max_depth=max_depth))
        assert set(rows) == {n for n in names if depth(n) <= max_depth}
        hidden = sum(depth(n) > max_depth for n in names)
        assert f"{hidden} rows deeper than depth {max_depth} hidden" in report_html(rep, max_depth)
    full = report_html(rep, max_depth=10)
    assert set(rows_of(full)) == set(names)
    assert "rows hidden" not in full and "rows deeper" not in full

    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)])
    text = report_html(em.profile(model, torch.randn(1, 4)), max_rows=3)
    assert list(rows_of(text)) == ["", "0", "1"]  # tree order, cut after 3 rows
    assert "3 more rows hidden (max_rows=3)" in text


class Bessel(nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)  # no FLOP rule


def test_names_are_escaped_and_unsupported_ops_listed():
    model = nn.Sequential(OrderedDict([("<bad>&x", nn.Linear(4, 4)), ("j0", Bessel())]))
    text = report_html(em.profile(model, torch.randn(2, 4)))
    assert "<bad>" not in text and "&lt;bad&gt;&amp;x" in text
    assert "<bad>&x" in rows_of(text)  # the parser unescapes the attribute back to the name
    assert "Unsupported ops" in text and "aten::special_bessel_j0</code> ×1" in text
    assert "Unsupported ops" not in report_html(em.profile(mlp(), torch.randn(2, 8)))


def test_timed_report_has_time_bars():
    model = mlp()
    rows = rows_of(report_html(em.profile(model, torch.randn(2, 8), time=True)))
    assert rows[""]["bars"]["time"] == 100.0
    assert all(0 <= rows[n]["bars"]["time"] <= 100 for n in ("0", "1", "2"))
    assert rows[""]["text"][-2].endswith("s")  # the model's time, in human units


def test_timing_in_milliseconds_with_throughput():
    t = em.Timing(median=0.00125, mean=0.0013, std=2e-5, min=0.0012, max=0.0017, p10=0.00121,
                  p90=0.0014, p99=0.0016, iqr=4e-5, n=812, clock="steady_clock",
                  batch_size=4, seq_len=16)
    text = timing_html(t)
    head = re.findall(r"<th>(.*?)</th>", text)
    cells = dict(zip(head, re.findall(r'<td class="em-num">(.*?)</td>', text), strict=True))
    assert "Timing (ms)" in text
    assert cells == {"median": "1.250", "mean": "1.300", "std": "0.020", "min": "1.200",
                     "max": "1.700", "p10": "1.210", "p90": "1.400", "p99": "1.600",
                     "iqr": "0.040", "runs": "812",
                     "clock": "steady_clock", "batch": "4", "seq len": "16",
                     "throughput": "3.20 K items/s",  # 4 / 1.25 ms
                     "tokens/s": "51.20 K tokens/s"}  # 4 * 16 / 1.25 ms
    assert "items/s" not in timing_html(em.Timing(1, 1, 0, 1, 1, 1, 1, 1, 0, 3, "cuda_event"))


def test_summary_with_units_and_missing_values():
    text = summary_html({"steps": 10, "wall_s": 0.52, "idle_fraction": 0.123,
                         "clock": "steady_clock", "step_time_median": 0.05,
                         "examples_per_s": 640.0, "tokens_per_s": None,
                         "flops_per_step": 1.2e9, "achieved_flops_per_s": 2.4e10,
                         "peak_bytes": 3 << 20}, title="Run <1>")
    assert "Run &lt;1&gt;" in text
    for value in ["10", "520.000 ms", "12.3%", "steady_clock", "50.000 ms", "640 examples/s",
                  "—", "1.20 GFLOP", "24.00 GFLOP/s", "3.00 MiB"]:
        assert f'<td class="em-num">{value}</td>' in text


def test_comparison_correlation_and_flips():
    cmp = em.compare(pd.DataFrame({"model": ["a", "b"], "params": [1, 2], "flops": [2, 1]}),
                     ["params", "flops"])
    text = comparison_html(cmp)
    # two models in opposite orders: tau = -1 off the diagonal (shaded red), +1 on it
    assert text.count(">-1.00</td>") == 2 and text.count(">+1.00</td>") == 2
    assert "rgba(204,68,51,0.75)" in text
    assert "Rank flips (1)" in text
    assert ('<td class="em-l">a</td><td class="em-l">b</td><td class="em-l">params</td>'
            '<td class="em-l">flops</td><td class="em-num">0.5×</td>'
            '<td class="em-num">2×</td>') in text
    same = em.compare(pd.DataFrame({"model": ["a", "b"], "params": [1, 2], "flops": [1, 2]}),
                      ["params", "flops"])
    assert "no flips" in comparison_html(same) and ">-1.00<" not in comparison_html(same)


def test_display_imports_no_extension():
    import effmetrics.display as display

    tree = ast.parse(Path(display.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "html", "math", "pandas", "effmetrics.units"}
