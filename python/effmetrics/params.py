"""Parameter counts: unique vs shared vs applied, trainable vs frozen, buffers, embeddings."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclasses.dataclass
class ParamCount:
    """Parameter counts of a model (numbers of elements).

    total / unique: each distinct parameter once (tied weights and a block reused L times count
        once), as ``sum(p.numel() for p in model.parameters())``.
    shared: elements of parameters reachable under more than one name.
    applied: each use in the profiled pass counts (a block applied L times counts L times);
        None until a pass was profiled.
    touched: distinct parameters the pass actually read (an MoE forward touches only its routed
        experts); None until a pass was profiled.
    trainable / frozen: by requires_grad. buffers: registered buffers (running stats...), apart.
    embedding: parameters of nn.Embedding / nn.EmbeddingBag modules; non_embedding: the rest.
    """

    total: int
    shared: int
    trainable: int
    frozen: int
    buffers: int
    embedding: int
    applied: int | None = None
    touched: int | None = None

    @property
    def unique(self) -> int:
        return self.total

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["unique"] = self.unique
        d["non_embedding"] = self.non_embedding
        return d


def _storage_key(t: torch.Tensor):
    # Two Parameter objects viewing the same memory are one parameter. Storage identity (not
    # data_ptr) also works on `meta`, where every data_ptr is 0.
    return (t.untyped_storage()._cdata, t.storage_offset(), tuple(t.shape), t.stride())


def unique_parameters(model: nn.Module) -> dict:
    """{storage key: (parameter, [names])} over every name a parameter is reachable by."""
    found: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = _storage_key(p)
        if key in found:
            found[key][1].append(name)
        else:
            found[key] = (p, [name])
    return found


def count_params(model: nn.Module) -> ParamCount:
    """Count a module's parameters; see ParamCount for each field."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"count_params needs a torch.nn.Module; got {type(model).__name__}. "
            "For a plain function there are no parameters to count."
        )
    params = unique_parameters(model)
    embedding_keys = set()
    for m in model.modules():
        if isinstance(m, _EMBEDDING_TYPES):
            embedding_keys.update(_storage_key(p) for p in m.parameters(recurse=False))
    buffers = {}
    for _, b in model.named_buffers(remove_duplicate=False):
        buffers.setdefault(_storage_key(b), b.numel())
    return ParamCount(
        total=sum(p.numel() for p, _ in params.values()),
        shared=sum(p.numel() for p, names in params.values() if len(names) > 1),
        trainable=sum(p.numel() for p, _ in params.values() if p.requires_grad),
        frozen=sum(p.numel() for p, _ in params.values() if not p.requires_grad),
        buffers=sum(buffers.values()),
        embedding=sum(p.numel() for k, (p, _) in params.items() if k in embedding_keys),
    )


def params_by_module(model: nn.Module) -> dict:
    """{qualified module name: unique parameter elements in it and its submodules}."""
    out = dict.fromkeys((name for name, _ in model.named_modules()), 0)
    seen = set()  # (module, parameter) pairs: a tied weight counts once per module
    for full, p in model.named_parameters(remove_duplicate=False):
        parts = full.split(".")[:-1]
        for k in range(len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix in out and (prefix, id(p)) not in seen:
                seen.add((prefix, id(p)))
                out[prefix] += p.numel()
    return out
