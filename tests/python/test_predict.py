"""Per-op roofline predictions (predict_latency, predict_ops, roofline's module rows) against
sums written out by hand, and Report.by_op(module, inclusive=True) on a ResNet stage."""
import pytest
import torch
from torch import nn

import effmetrics as em
from effmetrics.models import ResNet
from effmetrics.roofline import Hardware

B, IN, OUT = 4, 8, 16
F32 = 4  # bytes per element

# Linear: 2*B*IN*OUT matmul FLOPs; reads x, W, b; writes y. ReLU: one vector FLOP per element;
# reads y, writes y'.
LINEAR_FLOPS = 2 * B * IN * OUT  # 1024
LINEAR_BYTES = F32 * (B * IN + IN * OUT + OUT) + F32 * B * OUT  # 704 + 256 = 960
RELU_FLOPS = B * OUT  # 64
RELU_BYTES = 2 * F32 * B * OUT  # 512
# Peaks chosen so that the Linear is compute-bound (1 s of compute vs 0.5 s of memory) and the
# ReLU memory-bound (0.25 s of compute vs 512/1920 s of memory).
HW = Hardware("toy", matmul_flops=1024.0, vector_flops=256.0, bandwidth=1920.0)
LINEAR_S = max(LINEAR_FLOPS / 1024.0, LINEAR_BYTES / 1920.0)  # 1.0, compute
RELU_S = max(RELU_FLOPS / 256.0, RELU_BYTES / 1920.0)  # 0.2667, memory
PER_OP = LINEAR_S + RELU_S
# The old whole-model row: max(total compute, total memory) = max(1.25, 0.7667), not PER_OP
WHOLE = max(LINEAR_FLOPS / 1024.0 + RELU_FLOPS / 256.0, (LINEAR_BYTES + RELU_BYTES) / 1920.0)


def two_ops():
    return nn.Sequential(nn.Linear(IN, OUT), nn.ReLU())


def test_predict_latency_is_the_per_op_sum():
    assert LINEAR_FLOPS / 1024.0 > LINEAR_BYTES / 1920.0  # compute-bound
    assert RELU_FLOPS / 256.0 < RELU_BYTES / 1920.0  # memory-bound
    assert PER_OP != pytest.approx(WHOLE)
    model, x = two_ops(), torch.randn(B, IN)
    assert em.predict_latency(model, x, hw=HW) == pytest.approx(PER_OP)
    rep = em.profile(model, x)
    assert em.predict_latency(rep, hw=HW) == pytest.approx(PER_OP)
    ops = em.predict_ops(rep, hw=HW).set_index("op")
    assert ops.loc["aten::addmm", "predicted_s"] == pytest.approx(LINEAR_S)
    assert ops.loc["aten::addmm", "bound"] == "compute"
    assert ops.loc["aten::relu", "predicted_s"] == pytest.approx(RELU_S)
    assert ops.loc["aten::relu", "bound"] == "memory"
    assert ops["predicted_s"].sum() == pytest.approx(PER_OP)


def test_roofline_module_rows_sum_their_ops():
    rep = em.profile(two_ops(), torch.randn(B, IN))
    out = em.roofline(rep, HW)
    assert out.loc["", "predicted_s"] == pytest.approx(PER_OP)
    assert out.loc["0", "predicted_s"] == pytest.approx(LINEAR_S)
    assert out.loc["1", "predicted_s"] == pytest.approx(RELU_S)
    # compute_s and memory_s stay the row's totals, for information
    assert out.loc["", "compute_s"] == pytest.approx(LINEAR_FLOPS / 1024.0 + RELU_FLOPS / 256.0)
    assert out.loc["", "memory_s"] == pytest.approx((LINEAR_BYTES + RELU_BYTES) / 1920.0)
    assert out.loc["", "bound"] == "compute"  # the compute-bound Linear is most of the time
    ops = em.roofline(rep, HW, by="op")
    assert ops["predicted_s"].sum() == pytest.approx(PER_OP)


def test_predicting_from_a_model_leaves_it_where_it_was():
    model = two_ops()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[0].weight
    em.predict_latency(model, torch.randn(B, IN), hw="H100")
    assert model[0].weight is weight and weight.device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_calls_say_what_to_do():
    model, x = two_ops(), torch.randn(B, IN)
    rep = em.profile(model, x)
    with pytest.raises(TypeError, match="pass it alone"):
        em.predict_latency(rep, x, hw=HW)
    with pytest.raises(TypeError, match="device= does not apply"):
        em.predict_latency(model, x, hw=HW, device="cpu")
    with pytest.raises(ValueError, match="presets: H200"):
        em.predict_latency(rep, hw="B9000")
    with pytest.raises(TypeError, match="a model .* or a Report"):
        em.predict_latency(42, hw=HW)


@pytest.fixture(scope="module")
def resnet_report():
    with torch.device("meta"):
        model = ResNet(layers=(2, 2), classes=10)
    return em.profile(model, torch.empty(2, 3, 32, 32, device="meta"))


def test_by_op_inclusive_is_the_subtree(resnet_report):
    rep = resnet_report
    stage = "layers.0"
    children = [n for n in rep.by_module().index if n.startswith(stage + ".")
                and n.count(".") == stage.count(".") + 1]
    assert children == ["layers.0.0", "layers.0.1"]
    cols = ["calls", "flops", "macs", "bytes_read", "bytes_written"]
    inclusive = rep.by_op(module=stage, inclusive=True)[cols].sort_index()
    # expected: the stage's own ops plus each child's subtree
    parts = [rep.by_op(module=stage)[cols]] + [rep.by_op(module=c, inclusive=True)[cols]
                                               for c in children]
    expected = sum(p.reindex(inclusive.index, fill_value=0) for p in parts)
    assert (inclusive == expected).all().all()
    # and from the raw cells, filtered by name prefix
    cells = rep.ops()
    mine = cells[(cells["module"] == stage) | cells["module"].str.startswith(stage + ".")]
    assert inclusive["flops"].sum() == mine["flops"].sum()
    # the module row counts the same subtree
    row = rep.by_module().loc[stage]
    assert inclusive["flops"].sum() == row["flops"] > 0
    assert inclusive["bytes_read"].sum() == row["bytes_read"]
    # self ops (the default) of a Sequential: none
    assert rep.by_op(module=stage).empty
    assert rep.by_op(module="", inclusive=True)["flops"].sum() == rep.flops


def test_roofline_stage_row_is_the_sum_over_its_cells(resnet_report):
    rep, hw = resnet_report, Hardware("toy", 1e12, 1e11, 1e11)
    cells = rep.ops()
    inside = cells["module"].str.startswith("layers.1.")
    expected = sum(max(m / 1e12 + v / 1e11, (r + w) / 1e11) for m, v, r, w in zip(
        cells["flops_matmul"][inside], cells["flops_vector"][inside],
        cells["bytes_read"][inside], cells["bytes_written"][inside]))
    assert em.roofline(rep, hw).loc["layers.1", "predicted_s"] == pytest.approx(expected)


def test_by_op_bad_module(resnet_report):
    with pytest.raises(ValueError, match="no module 'layers.9'"):
        resnet_report.by_op(module="layers.9", inclusive=True)
    with pytest.raises(ValueError, match="needs module="):
        resnet_report.by_op(inclusive=True)
