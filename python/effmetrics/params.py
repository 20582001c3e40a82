"""Parameter counts: unique vs shared vs applied, trainable vs frozen, buffers, embeddings."""
from __future__ import annotations

import dataclasses
import warnings
import weakref

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from effmetrics import _C

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
    nonzero: nonzero elements of the unique parameters (a 2:4 semi-structured sparse weight counts
        half its elements); computed by profile(effective=True) and count_params(nonzero=True),
        None otherwise and on meta (no values).
    """

    total: int
    shared: int
    trainable: int
    frozen: int
    buffers: int
    embedding: int
    applied: int | None = None
    touched: int | None = None
    nonzero: int | None = None

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


@dataclasses.dataclass
class ModelScan:
    """One walk over a model: everything profile() needs before and after the pass."""

    counts: ParamCount
    module_params: dict  # qualified module name -> unique parameter elements, inclusive
    module_names: dict  # id(module) -> its first qualified name ("" = the root)
    parameters: list  # each distinct parameter once (by memory: storage, offset, shape, strides)
    watch: list  # (TensorImpl address, numel) of each distinct parameter, for Profiler.watch
    modules: list  # each module once, in pre-order (module_names' keys are their ids)
    semi_structured: bool = False  # some parameter is a 2:4 semi-structured sparse tensor
    lazy: int = 0  # parameters not materialized yet (a lazy module before its first call)


@dataclasses.dataclass
class _Walk:
    """What one walk over a module tree found, kept while the tree is the same (_structure).
    It holds no object of the tree: its modules are weak references (one freed makes the walk
    stale: its id may be another module's now), and its parameters and buffers are found again
    by (module, name) at each scan (a weak reference would stop torch.utils.swap_tensors). So
    the model, the cache's weak key, and whatever is taken out of it are freed as without
    effmetrics."""

    structure: list  # _structure() of the tree as walked
    module_names: dict
    below: list  # weak references to the modules after the root, in pre-order
    paths: list  # per module path, in pre-order: (name, parent index, occurrence indices)
    occ: list  # (module index, name) of each parameter, once per module path (0: the root)
    in_embedding: list  # occurrence indices owned by embedding modules
    bufs: list  # (module index, name) of each buffer, once per module path
    stale: list  # [True] once a module walked was freed
    # (the tensors' facts, the counts made from them (a ModelScan without its objects), the
    # occurrence index of each distinct parameter): one attribute, replaced whole (threads)
    scanned: tuple | None = None


# model -> its last _Walk. Weak keys: a model's walk goes with it.
_WALKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(modules: list) -> list:
    """Everything a walk reads off the tree, flat, in walk order: each module's class (the class
    before ModuleScopes gave it a scoped subclass, if it did); the keys of its _modules,
    _parameters and _buffers; the ids of its submodules and the types of its parameters and
    buffers (None or a tensor class); each dict's length first (_C.module_structure builds it:
    in Python it cost ~6,500 instructions a module). The walk is the same when the list is equal
    and no module it walked was freed (then no other module has their ids). This catches what
    torch's registration hooks miss (`del`, direct dict edits); a parameter replaced by another
    (Module._apply puts new ones into _parameters directly) is found again by its name, and the
    tensors' facts are read at every scan."""
    return _C.module_structure(modules)


def _walk(model: nn.Module) -> tuple[_Walk, list]:
    """One walk over the module tree collecting every (module, parameter) occurrence. Returns
    the walk and the modules in pre-order (the root first)."""
    module_names: dict = {}  # id(module) -> its first qualified name
    index_of: dict = {}  # id(module) -> its index in modules
    modules: list = []
    paths: list = []
    occ: list = []
    in_embedding: list = []
    bufs: list = []
    stack = [("", model, -1)]
    while stack:
        mname, m, parent = stack.pop()
        i = index_of.get(id(m))
        if i is None:
            i = index_of[id(m)] = len(modules)
            module_names[id(m)] = mname
            modules.append(m)
        direct = ()
        if m._parameters:
            n0 = len(occ)
            occ.extend((i, k) for k, p in m._parameters.items() if p is not None)
            direct = range(n0, len(occ))
            if isinstance(m, _EMBEDDING_TYPES):
                in_embedding.extend(direct)
        index = len(paths)
        paths.append((mname, parent, direct))
        if m._buffers:
            bufs.extend((i, k) for k, b in m._buffers.items() if b is not None)
        if m._modules:
            prefix = mname + "." if mname else ""
            # Reversed onto the stack: popped in registration order, as named_modules() yields.
            for cname, child in reversed(m._modules.items()):
                if child is not None:
                    stack.append((prefix + cname, child, index))
    stale = [False]

    def freed(_ref, stale=stale):
        stale[0] = True

    below = [weakref.ref(m, freed) for m in modules[1:]]  # modules take weak references
    return (_Walk(_structure(modules), module_names, below, paths, occ, in_embedding, bufs,
                  stale), modules)


def scan(model: nn.Module) -> ModelScan:
    """Walk the module tree once: parameter counts, per-module counts, names.

    profile() runs this before every pass, so it is written for speed: the walk of a model is
    kept and reused while the tree is the same (_structure, a few us for every hundred modules;
    a changed tree is walked again); the parameters are found again by name and the tensors'
    facts (which occurrences view the same memory, numel, requires_grad) read again each time,
    in one C++ call, and the counts made again when they changed. Each call returns its own
    ParamCount."""
    walk, modules = walk_of(model)
    occ, facts = _tensors(walk, modules)
    scanned = walk.scanned
    if scanned is None or scanned[0] != facts:
        scanned = walk.scanned = (facts, *_scanned(walk, occ, *facts))
    _, counted, distinct = scanned  # the counts; the objects are this call's
    return ModelScan(counts=copy_counts(counted.counts), module_params=counted.module_params,
                     module_names=counted.module_names, parameters=[occ[i] for i in distinct],
                     watch=counted.watch, modules=modules, semi_structured=counted.semi_structured,
                     lazy=counted.lazy)


def walk_of(model: nn.Module) -> tuple[_Walk, list]:
    """The model's walk, kept while its tree is the same (_structure; a new _Walk once anything
    in it changed), and its modules in pre-order (the root first)."""
    try:
        walk = _WALKS.get(model)
    except TypeError:  # an unhashable module (its class defines __eq__ only)
        walk = None
    modules = None
    if walk is not None and not walk.stale[0]:  # [model, *walk.below] if _structure is the same
        modules = _C.module_tree_if_unchanged(model, walk.below, walk.structure)
    if modules is None:
        walk, modules = _walk(model)
        try:
            _WALKS[model] = walk
        except TypeError:  # unhashable: walked each time
            pass
    return walk, modules


def copy_counts(counts: ParamCount) -> ParamCount:
    """copy.copy(counts) without copy's protocol: a profile makes two, on caches the last pass
    left cold, and copy.copy takes ~4x the time of this even warm (2.4 us vs 0.6 us here)."""
    new = object.__new__(ParamCount)
    new.__dict__.update(counts.__dict__)
    return new


def _tensors(walk: _Walk, modules: list) -> tuple[list, tuple]:
    """The walk's parameter occurrences, found by (module, name) in modules (as _walk returned
    them), and the tensors' facts: (TensorImpl addresses, tensor_facts of the parameters, of the
    buffers or None). Read at every scan: torch.utils.swap_tensors changes the addresses."""
    occ, cdata, facts = _C.named_tensor_facts(modules, walk.occ, "_parameters")
    buffers = _C.named_tensor_facts(modules, walk.bufs, "_buffers")[2] if walk.bufs else None
    return occ, (cdata, facts, buffers)


def _scanned(walk: _Walk, occ: list, cdata: list, facts: tuple,
             buffer_facts: tuple | None) -> tuple[ModelScan, list]:
    """The counts of a walk from its tensors' facts (parameters and modules left empty), and the
    occurrence index of each distinct parameter; inclusive sums add each module into its parent
    (the walk is pre-order)."""
    paths = walk.paths
    first, numel, grad = facts
    names = [0] * len(occ)
    for f in first:
        names[f] += 1
    embedding_set = {first[i] for i in walk.in_embedding}
    distinct = [i for i, f in enumerate(first) if f == i]
    total = shared = trainable = embedding = 0
    for i in distinct:
        k = numel[i]
        total += k
        if names[i] > 1:
            shared += k
        if grad[i]:
            trainable += k
        if i in embedding_set:
            embedding += k
    buffers = 0
    if buffer_facts is not None:
        bfirst, bnumel, _ = buffer_facts
        buffers = sum(k for i, (f, k) in enumerate(zip(bfirst, bnumel)) if f == i)
    counts = ParamCount(total=total, shared=shared, trainable=trainable,
                        frozen=total - trainable, buffers=buffers, embedding=embedding)
    return ModelScan(counts, _inclusive(paths, first, numel, shared > 0), walk.module_names,
                     [], [(cdata[i], numel[i]) for i in distinct], [],
                     any([is_semi_structured(occ[i]) for i in distinct]),
                     sum([isinstance(occ[i], UninitializedParameter) for i in distinct])), distinct


def _inclusive(paths: list, first: list, numel: list, has_shared: bool) -> dict:
    """{module name: parameter elements in it and below}; a shared parameter counts once per
    module it is under. paths: [(name, parent index, occurrence indices)] in pre-order."""
    totals: dict = {}
    if not has_shared:  # the common case: each module's own sum, added up into its parents
        sums = [sum(numel[i] for i in direct) for _, _, direct in paths]
        for i in range(len(paths) - 1, 0, -1):
            sums[paths[i][1]] += sums[i]
        for (name, _, _), n in zip(paths, sums):
            totals.setdefault(name, n)
        return totals
    # Shared parameters: the distinct ones under each module, merged upwards.
    under = [{first[i] for i in direct} for _, _, direct in paths]
    for i in range(len(paths) - 1, 0, -1):
        under[paths[i][1]] |= under[i]
    for (name, _, _), keys in zip(paths, under):
        totals.setdefault(name, sum(numel[k] for k in keys))
    return totals


# Each parameter keeps (its _version, its nonzero count) in this attribute: a weight is read again
# only after it changed, and the cache goes with the parameter.
_NONZERO_ATTR = "_effmetrics_nonzero"


try:
    from torch.sparse import SparseSemiStructuredTensor as _SEMI_STRUCTURED
except ImportError:  # pragma: no cover - older torch
    _SEMI_STRUCTURED = None


def is_semi_structured(p: torch.Tensor) -> bool:
    """A 2:4 semi-structured sparse tensor (torch.sparse.to_sparse_semi_structured): half of
    each group of four is zero, and the kernels skip them."""
    return _SEMI_STRUCTURED is not None and isinstance(p, _SEMI_STRUCTURED)


def nonzero_counts(parameters: list) -> list | None:
    """Nonzero elements of each parameter, None on meta (no values). Cached per parameter
    version, so a training loop that profiles every step reads each weight once per update."""
    out = []
    for p in parameters:
        if is_semi_structured(p):
            out.append(p.numel() // 2)
            continue
        if p.device.type == "meta":
            return None
        key = p._version
        hit = getattr(p, _NONZERO_ATTR, None)
        if hit is not None and hit[0] == key:
            out.append(hit[1])
            continue
        with torch.no_grad():
            n = int(torch.count_nonzero(p.detach()))
        try:
            setattr(p, _NONZERO_ATTR, (key, n))
        except (AttributeError, TypeError):  # a tensor type that takes no attributes
            pass
        out.append(n)
    return out


def count_params(model: nn.Module, nonzero: bool = False) -> ParamCount:
    """Count a module's parameters; see ParamCount for each field. nonzero=True also counts the
    nonzero elements (reads every weight; None on meta)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"count_params needs a torch.nn.Module; got {type(model).__name__}. "
            "For a plain function there are no parameters to count."
        )
    model_scan = scan(model)
    if model_scan.lazy:
        warnings.warn(
            f"effmetrics: {model_scan.lazy} parameter(s) of this model are not materialized yet "
            "(a lazy module, e.g. nn.LazyLinear, before its first call): they count 0 here. "
            "Count after one forward, or em.profile(model, x), which counts after its pass.",
            stacklevel=2)
    if nonzero:
        counts = nonzero_counts(model_scan.parameters)
        model_scan.counts.nonzero = sum(counts) if counts is not None else None
    return model_scan.counts
