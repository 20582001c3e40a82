"""What the public functions read off a call's arguments."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree as pytree


def device_of(args, kwargs, model=None) -> torch.device:
    """The first tensor argument's device, else the model's parameters', else the CPU."""
    for t in pytree.tree_leaves((args, kwargs)):
        if isinstance(t, torch.Tensor):
            return t.device
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def batch_size_of(args, kwargs) -> int | None:
    """The first dimension of the first tensor argument with one."""
    for t in pytree.tree_leaves((args, kwargs)):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return None
