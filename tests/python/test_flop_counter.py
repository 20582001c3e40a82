"""Matmul-class FLOPs equal torch.utils.flop_counter.FlopCounterMode's, forward and
forward+backward, on varied models.

Where the reference is wrong or incomplete, references.py corrects the reference (with torch's
own formulas), never effmetrics.
"""
import warnings

import pytest
import torch
from torch import nn
from torch.utils import flop_counter as fc

import effmetrics as em
from models import CNN, MLP, TCN, Decoder, Top1MoE, UniversalTransformer, ViT
from references import reference_flops


def transformer_layer():
    return nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)


CASES = {
    "mlp": (MLP, lambda: torch.randn(8, 32)),
    "cnn_grouped_depthwise": (CNN, lambda: torch.randn(2, 3, 32, 32)),
    "transposed_conv": (Decoder, lambda: torch.randn(2, 16, 8, 8)),
    "conv1d_dilated": (TCN, lambda: torch.randn(2, 8, 64)),
    "vit_sdpa": (lambda: ViT(32, 2, 4, 64, 8, image=32, classes=10),
                 lambda: torch.randn(2, 3, 32, 32)),
    "vit_einsum": (lambda: ViT(32, 2, 4, 64, 8, image=32, classes=10, attention="einsum"),
                   lambda: torch.randn(2, 3, 32, 32)),
    "universal_transformer": (lambda: UniversalTransformer(32, 4, 4, 64),
                              lambda: torch.randn(2, 16, 32)),
    "moe_top1": (lambda: Top1MoE(32, 64, 4), lambda: torch.randn(4, 8, 32)),
    "torch_transformer_layer": (transformer_layer, lambda: torch.randn(2, 10, 32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_flop_counter(name):
    build, make_input = CASES[name]
    model, x = build(), make_input()
    expected = reference_flops(lambda: model(x))
    rep = em.profile(model, x)
    assert expected > 0
    assert rep.flops_matmul == expected
    assert rep.flops_backward == 0
    assert rep.unsupported_ops == {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_matches_flop_counter(name):
    build, make_input = CASES[name]
    model, x = build(), make_input()
    expected = reference_flops(lambda: model(x).sum().backward())
    model.zero_grad()
    rep = em.profile(model, x, backward=True)
    assert rep.flops_matmul == expected
    forward = reference_flops(lambda: model(x))
    fwd_matmul = rep.ops().query("phase == 'forward' and kind == 'matmul'")["flops"].sum()
    assert fwd_matmul == forward
    assert rep.unsupported_ops == {}


def test_grouped_conv_backward_is_exact_where_reference_overcounts():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    rep = em.profile(conv, x, backward=True)
    macs_forward = 1 * 8 * 1 * 9 * 36  # N * Cout * Cin/g * k*k * H*W
    assert rep.macs_matmul == 3 * macs_forward  # forward + grad_input + grad_weight
    with fc.FlopCounterMode(display=False) as mode:
        conv(x).sum().backward()
    # torch's grad_weight term ignores groups: 8x the exact weight-gradient work.
    assert mode.get_total_flops() == 2 * (2 * macs_forward + 8 * macs_forward)


@pytest.mark.parametrize("kind,bidirectional", [("LSTM", False), ("LSTM", True), ("GRU", False)])
def test_recurrent_layers_match_flop_counter_on_torch_s_native_path(kind, bidirectional):
    """An LSTM on CPU runs as oneDNN kernels (mkldnn_rnn_layer), one opaque op per layer and
    direction, which FlopCounterMode does not see into. The reference: FlopCounterMode on torch's
    native path (oneDNN off), which runs the same gate matmuls as ATen ops, every gradient asked
    for (the kernels' backward computes all of them). The GRU runs natively either way."""
    torch.manual_seed(0)
    model = getattr(nn, kind)(16, 32, num_layers=2, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(2, 5, 16, requires_grad=True)
    states = 2 * (2 if bidirectional else 1)
    h = torch.zeros(states, 2, 32, requires_grad=True)
    hx = (h, torch.zeros(states, 2, 32, requires_grad=True)) if kind == "LSTM" else h

    def forward():
        return model(x, hx)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the flags' note on TF32 for Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            expected_forward = reference_flops(forward)
            expected = reference_flops(lambda: forward().sum().backward())
    gates = {"LSTM": 4, "GRU": 3}[kind]
    directions = 2 if bidirectional else 1
    # by hand: T*B rows times each layer's w_ih and w_hh (layer 2 reads both directions)
    rows = 2 * 5
    by_hand = 2 * rows * directions * gates * 32 * ((16 + 32) + (32 * directions + 32))
    assert expected_forward == by_hand
    rep = em.profile(forward)
    assert rep.flops_matmul == expected_forward and rep.unsupported_ops == {}
    rep = em.profile(lambda: forward().sum().backward())
    assert rep.flops_matmul == expected and rep.unsupported_ops == {}
    if kind == "LSTM":  # the oneDNN path was the one counted
        assert "aten::mkldnn_rnn_layer" in rep.by_op().index
