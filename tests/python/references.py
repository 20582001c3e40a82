"""The reference matmul-class FLOP count: torch.utils.flop_counter.FlopCounterMode, corrected.

Where the reference is wrong or incomplete we correct the reference (with torch's own formulas),
never effmetrics:
- some torch releases leave the CPU flash SDPA kernel (and its backward) out of flop_registry;
- FlopCounterMode's convolution_backward ignores `groups` for grad_weight (it counts g times
  the work of a grouped convolution's weight gradient; effmetrics counts it exactly).
"""
import torch
from torch.utils import flop_counter as fc

aten = torch.ops.aten


def _conv_backward_group_aware(grad_out, x, w, bias, stride, padding, dilation, transposed,
                               output_padding, groups, output_mask, out_shape=None, **kw):
    # torch's conv_backward_flop with one change: the weight gradient of a grouped convolution
    # is divided by `groups` (each group only sees its Cin/g input channels).
    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        flops += fc.conv_flop_count(grad_out, w, out_shape[0], not transposed)
    if output_mask[1]:
        if transposed:
            grad_weight = fc.conv_flop_count(t(grad_out), t(x), t(out_shape[1]), False)
        else:
            grad_weight = fc.conv_flop_count(t(x), t(grad_out), t(out_shape[1]), False)
        flops += grad_weight // groups
    return flops


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kw):
    return fc.sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kw):
    return fc.sdpa_backward_flop_count(grad_out, q, k, v)


def reference_flops(fn) -> int:
    mapping = {aten.convolution_backward: _conv_backward_group_aware}
    if aten._scaled_dot_product_flash_attention_for_cpu not in fc.flop_registry:
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu
    if aten._scaled_dot_product_flash_attention_for_cpu_backward not in fc.flop_registry:
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward
    with fc.FlopCounterMode(display=False, custom_mapping=mapping) as mode:
        fn()
    return mode.get_total_flops()


def flex_reference_flops(query, key, value, backward: bool = False) -> int | None:
    """FlopCounterMode's count of a flex_attention call, from the formulas torch registers for
    the flex_attention operators (flop_registry). The mode itself cannot run flex_attention in
    eager mode here: its dispatch mode returns NotImplemented for the operator (torch 2.13 and
    2.14 raise "no implementation found for 'torch.ops.higher_order.flex_attention'"), and the
    failed call leaves Dynamo unable to compile flex_attention again in the same process."""
    hop = torch.ops.higher_order
    if hop.flex_attention not in fc.flop_registry:  # torch 2.11 registers no formula for it
        return None
    flops = fc.flop_registry[hop.flex_attention](query, key, value)
    if backward:
        out = torch.empty(*query.shape[:-1], value.shape[-1], device="meta")
        flops += fc.flop_registry[hop.flex_attention_backward](query, key, value, out, None, out)
    return flops
