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


@dataclasses.dataclass
class ModelScan:
    """One walk over a model: everything profile() needs before and after the pass."""

    counts: ParamCount
    module_params: dict  # qualified module name -> unique parameter elements, inclusive
    module_names: dict  # id(module) -> its first qualified name ("" = the root)
    parameters: list  # each distinct parameter once (by storage)


def scan(model: nn.Module) -> ModelScan:
    """Walk the module tree once: parameter counts, per-module counts, names."""
    module_names: dict = {}
    own: list = []  # (module name, [(storage key, numel)...]) for modules with parameters
    key_of: dict = {}  # id(tensor) -> storage key (untyped_storage() is the slow part)
    names_of: dict = {}  # storage key -> [parameter, number of names]
    embedding_keys, buffers = set(), {}
    for mname, m in model.named_modules(remove_duplicate=False):
        module_names.setdefault(id(m), mname)
        direct = []
        for p in m._parameters.values():
            if p is None:
                continue
            key = key_of.get(id(p))
            if key is None:
                key = key_of[id(p)] = _storage_key(p)
            entry = names_of.setdefault(key, [p, 0])
            entry[1] += 1
            direct.append((key, p.numel()))
            if isinstance(m, _EMBEDDING_TYPES):
                embedding_keys.add(key)
        own.append((mname, direct))
        for b in m._buffers.values():
            if b is not None:
                buffers.setdefault(_storage_key(b), b.numel())
    entries = list(names_of.items())
    counts = ParamCount(
        total=sum(p.numel() for _, (p, _) in entries),
        shared=sum(p.numel() for _, (p, n) in entries if n > 1),
        trainable=sum(p.numel() for _, (p, _) in entries if p.requires_grad),
        frozen=sum(p.numel() for _, (p, _) in entries if not p.requires_grad),
        buffers=sum(buffers.values()),
        embedding=sum(p.numel() for k, (p, _) in entries if k in embedding_keys),
    )
    return ModelScan(counts, _inclusive(own, any(n > 1 for _, (_, n) in entries)),
                     module_names, [p for _, (p, _) in entries])


def _inclusive(own: list, has_shared: bool) -> dict:
    """{module name: parameter elements in it and below}; a shared parameter counts once per
    module it is under."""
    totals = dict.fromkeys((name for name, _ in own), 0)
    seen = set()
    for mname, direct in own:
        if not direct:
            continue
        prefixes = [""] + [mname[:i] for i, ch in enumerate(mname) if ch == "."] + [mname]
        if not has_shared:  # the common case: plain sums
            n = sum(numel for _, numel in direct)
            for prefix in prefixes[0 if mname else 1:]:
                totals[prefix] += n
            continue
        for key, numel in direct:
            for prefix in prefixes[0 if mname else 1:]:
                if (prefix, key) not in seen:
                    seen.add((prefix, key))
                    totals[prefix] += numel
    return totals


def count_params(model: nn.Module) -> ParamCount:
    """Count a module's parameters; see ParamCount for each field."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"count_params needs a torch.nn.Module; got {type(model).__name__}. "
            "For a plain function there are no parameters to count."
        )
    return scan(model).counts
