"""Parameter counts: sharing (Universal Transformer), MoE touched params, tied weights."""
import pytest
import torch
from torch import nn

import effmetrics as em
from models import Block, Top1MoE, UniversalTransformer


def block_params(D, M):
    return 4 * D * D + 2 * D * M + 9 * D + M


def test_universal_transformer_shares_params_not_flops():
    D, L, H, M = 32, 6, 4, 64
    x = torch.randn(2, 16, D)
    shared = UniversalTransformer(D, L, H, M, shared=True)
    vanilla = UniversalTransformer(D, L, H, M, shared=False)
    rs, rv = em.profile(shared, x), em.profile(vanilla, x)
    # unique params shrink by (L-1) blocks; FLOPs do not move
    assert rs.params.total == block_params(D, M)
    assert rv.params.total == L * block_params(D, M)
    assert rv.params.total - rs.params.total == (L - 1) * block_params(D, M)
    assert rs.flops == rv.flops and rs.macs_matmul == rv.macs_matmul
    # as used, the shared model applies its block L times: same as the vanilla model
    assert rs.params.applied == rv.params.applied == L * block_params(D, M)
    assert rs.params.touched == block_params(D, M)
    assert rs.by_module().loc["block", "calls"] == L


def test_moe_touches_only_routed_experts():
    D, F, E = 16, 32, 8
    moe = Top1MoE(D, F, E)
    x = torch.randn(1, 3, D)  # 3 tokens can reach at most 3 of the 8 experts
    with torch.no_grad():
        chosen = set(moe.router(x.reshape(-1, D)).argmax(-1).tolist())
    rep = em.profile(moe, x)
    expert = D * F + F + F * D + D
    assert rep.params.total == D * E + E * expert
    assert rep.params.touched == D * E + len(chosen) * expert
    assert rep.params.touched < rep.params.total


def test_switch_params_grow_at_fixed_flops_per_token():
    D, F, tokens = 16, 32, 64
    x = torch.randn(1, tokens, D)
    small, big = Top1MoE(D, F, 2), Top1MoE(D, F, 16)
    rs, rb = em.profile(small, x), em.profile(big, x)
    assert rb.params.total > 7 * rs.params.total
    # every token goes through exactly one expert MLP: 2*D*F MACs; the router adds D*E
    expert_macs = tokens * 2 * D * F
    assert rs.macs_matmul == expert_macs + tokens * D * 2
    assert rb.macs_matmul == expert_macs + tokens * D * 16


def test_tied_weights_count_once_applied_twice():
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.block = Block(16, 2, 32)
            self.lm_head = nn.Linear(16, 100, bias=False)
            self.lm_head.weight = self.embed.weight  # tied

        def forward(self, ids):
            return self.lm_head(self.block(self.embed(ids)))

    lm = TinyLM()
    pc = em.count_params(lm)
    assert pc.total == pc.unique == 100 * 16 + block_params(16, 32)
    assert pc.shared == 100 * 16
    assert pc.embedding == 100 * 16
    assert pc.non_embedding == block_params(16, 32)
    rep = em.profile(lm, torch.randint(0, 100, (2, 5)))
    assert rep.params.applied == 2 * 100 * 16 + block_params(16, 32)
    assert rep.params.touched == pc.total


def test_trainable_frozen_and_buffers():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    net[0].requires_grad_(False)
    pc = em.count_params(net)
    assert pc.frozen == 4 * 8 + 8
    assert pc.trainable == 8 + 8 + 8 * 2 + 2
    assert pc.buffers == 8 + 8 + 1  # running mean, running var, num_batches_tracked
    assert pc.total == pc.trainable + pc.frozen


def test_parameters_aliasing_one_storage_count_once():
    lin = nn.Linear(4, 4)
    other = nn.Linear(4, 4)
    other.weight = nn.Parameter(lin.weight.data)  # a second Parameter over the same memory
    both = nn.ModuleList([lin, other])
    assert em.count_params(both).total == 16 + 4 + 4


def test_count_params_on_meta():
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 10))
    assert em.count_params(net).total == 1000 * 1000 + 1000 + 1000 * 10 + 10


def test_parameters_without_storage_and_wrapper_subclasses_count():
    # A sparse weight has no storage, a wrapper subclass a storage of its own: each is one
    # parameter of its logical shape. Two views of one storage at different offsets are two
    # parameters (only the same view twice is one).
    from torch.testing._internal.two_tensor import TwoTensor

    sparse = nn.Linear(4, 4)
    sparse.weight = nn.Parameter(torch.eye(4).to_sparse())
    wrapped = nn.Linear(3, 3)
    wrapped.weight = nn.Parameter(TwoTensor(torch.randn(3, 3), torch.randn(3, 3)))
    shifted = nn.Linear(2, 2, bias=False)
    base = torch.randn(6)
    shifted.weight = nn.Parameter(base[:4].view(2, 2))
    shifted.register_parameter("tail", nn.Parameter(base[2:].view(2, 2)))  # overlaps, other view
    pc = em.count_params(nn.ModuleList([sparse, wrapped, shifted]))
    assert pc.total == (16 + 4) + (9 + 3) + (4 + 4)
    assert pc.shared == 0


# ---- the walk kept per model (params.scan): edits between two counts are always seen


def _expected(model):
    """Counts from torch's own iterators (named_parameters dedups by object, as scan does by
    memory here: no two parameters of these models share memory)."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "buffers": sum(b.numel() for b in model.buffers()),
            "modules": {name for name, _ in model.named_modules()}}


def _edits():
    def replace_submodule(m):  # __setattr__: torch's registration hook sees it
        m[1] = nn.Linear(8, 8, bias=False)

    def delete_submodule(m):  # del: no registration hook
        del m[2]

    def edit_modules_dict(m):  # a direct dict edit, same key: no hook, same length
        m._modules["0"] = nn.Linear(8, 8)

    def replace_kept_submodule(m):  # the one replaced stays alive: its id is not reused
        kept = m[3]
        m[3] = nn.Linear(8, 8)
        return kept

    def drop_bias(m):  # a registered parameter set to None: same keys, same lengths
        m[3].bias = None

    def replace_parameter_in_dict(m):  # as Module._apply does without set_data
        m[0]._parameters["weight"] = nn.Parameter(torch.randn(8, 8))

    def resize_parameter_data(m):  # p.data = ...: the same Parameter object, a new size
        m[3].bias.data = torch.zeros(8)
        m[3].weight.data = torch.zeros(8, 8)

    def freeze(m):  # requires_grad_: nothing in the tree changes
        m[0].weight.requires_grad_(False)

    def add_buffer(m):
        m[0].register_buffer("scale", torch.ones(5))

    def swap_tensors(m):  # swaps the Python objects' tensors: same objects, new TensorImpls
        other = nn.Parameter(torch.randn(8, 8))
        torch.utils.swap_tensors(m[0].weight, other)
        return other  # alive: its TensorImpl (the weight's before) is not freed and reused

    return [replace_submodule, delete_submodule, edit_modules_dict, replace_kept_submodule,
            drop_bias, replace_parameter_in_dict, resize_parameter_data, freeze, add_buffer,
            swap_tensors]


def test_module_structure_describes_the_tree_flat():
    """_C.module_structure, what scan compares before reusing a walk: per module its class, then
    for _modules, _parameters and _buffers the length, the keys and the values' ids (submodules)
    or classes (tensors; None for an entry set to None)."""
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.BatchNorm1d(4), shared, nn.Identity())
    model.register_module("absent", None)
    model[0].register_parameter("unused", None)
    model[1].register_buffer("scale", None)
    modules = [model, shared, model[1], model[3]]
    want = []
    for m in modules:
        want.append(type(m))
        for name in ("_modules", "_parameters", "_buffers"):
            d = getattr(m, name)
            want.append(len(d))
            want.extend(d)
            want.extend(id(v) if name == "_modules" else type(v) for v in d.values())
    assert em._C.module_structure(modules) == want
    assert em._C.module_structure([]) == []
    with pytest.raises(AttributeError):
        em._C.module_structure([object()])
    broken = nn.Linear(2, 2)
    object.__setattr__(broken, "_buffers", [])
    with pytest.raises(TypeError, match="_buffers is not a dict"):
        em._C.module_structure([broken])


def test_module_tree_if_unchanged_compares_the_kept_structure_in_place():
    """_C.module_tree_if_unchanged, scan's check before reusing a walk: [root, *the modules of the
    weak references] when module_structure of them equals the kept list (==, entry by entry),
    else None: after each change the structure holds, when a module was freed, or when the kept
    list is longer or shorter."""
    import weakref
    from collections import OrderedDict

    def tree():
        model = nn.Sequential(OrderedDict(lin=nn.Linear(4, 4), norm=nn.BatchNorm1d(4),
                                          act=nn.ReLU()))
        modules = [model, *model]
        return model, [weakref.ref(m) for m in modules[1:]], em._C.module_structure(modules)

    model, below, kept = tree()
    got = em._C.module_tree_if_unchanged(model, below, kept)
    assert [id(m) for m in got] == [id(model), *(id(m) for m in model)]
    # entries equal but not identical compare equal, as with ==: a key made again
    key = "".join(["li", "n"])
    assert key == kept[2] and key is not kept[2]
    model._modules = {key: model[0], "norm": model[1], "act": model[2]}
    assert em._C.module_tree_if_unchanged(model, below, kept) is not None
    # a parameter replaced under its name by one of the same class: the same structure
    model[0].weight = nn.Parameter(torch.zeros(4, 4))
    assert em._C.module_tree_if_unchanged(model, below, kept) is not None
    changes = {
        "key added": lambda m: m.register_buffer("extra", torch.zeros(1)),
        "key removed": lambda m: m[1]._buffers.pop("num_batches_tracked"),
        "value's class": lambda m: m[0]._parameters.__setitem__("bias", None),
        "child replaced, the old one alive": lambda m: alive.append(m._modules["act"])
        or m._modules.__setitem__("act", nn.ReLU()),
        "child renamed": lambda m: m._modules.__setitem__("relu", m._modules.pop("act")),
        "class": lambda m: object.__setattr__(m[2], "__class__", nn.Identity),
    }
    alive = []  # a child taken out and kept: its weak reference still holds
    for what, change in changes.items():
        model, below, kept = tree()
        change(model)
        assert em._C.module_tree_if_unchanged(model, below, kept) is None, what
    model, below, kept = tree()
    assert em._C.module_tree_if_unchanged(model, below, kept + [0]) is None
    assert em._C.module_tree_if_unchanged(model, below, kept[:-1]) is None
    del model[2]  # freed: its weak reference is dead
    assert em._C.module_tree_if_unchanged(model, below, kept) is None
    with pytest.raises(TypeError, match="weak references"):
        em._C.module_tree_if_unchanged(model, [model[0]], kept)


def test_a_lazy_model_is_counted_as_its_pass_leaves_it():
    """nn.LazyLinear makes its parameters at its first call. count_params before it warns that
    they count 0; em.profile and em.Counter count the model the pass left (sum of numel after
    it), with applied and touched None (their reads were watched at 0 elements) and a warning."""
    def lazy_model():
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 4))

    x = torch.randn(4, 16)
    model = lazy_model()
    with pytest.warns(UserWarning, match="2 parameter.*not materialized.*count 0"):
        before = em.count_params(model)
    assert before.total == 8 * 4 + 4  # the Linear alone
    with pytest.warns(UserWarning, match="2 parameter.*not materialized before the pass"):
        rep = em.profile(model, x, backward=True)
    total = sum(p.numel() for p in model.parameters())
    assert total == 16 * 8 + 8 + 8 * 4 + 4
    assert rep.params.total == total and rep.params.trainable == total
    assert rep.params.applied is None and rep.params.touched is None
    assert rep.by_module().loc["0", "params"] == 16 * 8 + 8
    again = em.profile(model, x)  # materialized now: no warning, applied known
    assert again.params.total == total and again.params.applied == total
    model = lazy_model()
    with pytest.warns(UserWarning, match="not materialized before the pass"):
        with em.Counter(model) as c:
            for _ in range(3):
                model(x).sum().backward()
                c.step()
    assert c.report.params.total == total


def test_a_scoped_tree_is_the_same_tree():
    """While ModuleScopes holds a model (each module of a scoped subclass of its class), the tree
    check sees each module's class before scoping: scan keeps its walk, and a Counter's counted
    steps (scoped) and its other steps (not) compare alike."""
    from effmetrics.params import scan, walk_of
    from effmetrics.scopes import ModuleScopes

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    walk, _ = walk_of(model)
    found = scan(model)
    scopes = ModuleScopes.acquire(found.module_names, found.modules)
    try:
        assert type(model[0]) is not nn.Linear  # scoped
        assert walk_of(model)[0] is walk
    finally:
        ModuleScopes.release(scopes)
    assert type(model[0]) is nn.Linear and walk_of(model)[0] is walk
    object.__setattr__(model[1], "__class__", nn.Identity)  # any other class change: a new walk
    assert walk_of(model)[0] is not walk


def test_training_modes_and_parameter_state_read_each_module_and_parameter():
    """_C.training_modes: a byte per module, its training flag. _C.parameter_state: 4 bytes per
    parameter found by (module index, name): bit 0 requires_grad and bit 1 a gradient is there;
    the dtype's code (as scalar_type_codes gives it); the device type and index."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Linear(2, 2))
    modules = [model, *model]
    model[1].eval()
    assert em._C.training_modes(modules) == bytes([1, 1, 0, 1])
    model[2].bias.requires_grad_(False)
    model(torch.randn(3, 2)).sum().backward()
    model[0].weight.grad = None
    pairs = [(1, "weight"), (1, "bias"), (3, "weight"), (3, "bias")]
    params = [model[0].weight, model[0].bias, model[2].weight, model[2].bias]

    def codes():
        return bytes(em._C.scalar_type_codes([p._cdata for p in params]))

    state = em._C.parameter_state(modules, pairs)
    assert state[0::4] == bytes([0b01, 0b11, 0b11, 0b00])
    assert state[1::4] == codes()
    model[2].to(torch.bfloat16)
    params[2:] = [model[2].weight, model[2].bias]
    cast = em._C.parameter_state(modules, pairs)
    assert cast[1::4] == codes() and cast[1::4] != state[1::4]
    assert cast[1::4][:2] == state[1::4][:2]
    model[0].to("meta")
    moved = em._C.parameter_state(modules, pairs)
    assert moved[2::4][:2] != state[2::4][:2] and moved[2::4][2:] == state[2::4][2:]
    with pytest.raises(KeyError):
        em._C.parameter_state(modules, [(1, "nope")])
    with pytest.raises(IndexError, match="parameter_state: module index"):
        em._C.parameter_state(modules, [(4, "weight")])
    with pytest.raises(TypeError, match=r"parameter_state: each pair is \(module index, name\)"):
        em._C.parameter_state(modules, [1])


def test_named_tensor_facts_finds_each_tensor_by_module_and_name():
    """_C.named_tensor_facts, how scan reads the parameters again before every pass: the tensor
    at modules[i].<where>[name] for each (i, name), its TensorImpl address, and the facts (the
    first entry viewing the same memory, numel, requires_grad)."""
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.weight = a.weight  # tied
    b.bias.requires_grad_(False)
    a.register_buffer("count", torch.zeros(4))
    modules = [a, b]
    pairs = [(0, "weight"), (0, "bias"), (1, "weight"), (1, "bias")]
    tensors, cdata, (first, numel, grad) = em._C.named_tensor_facts(modules, pairs, "_parameters")
    assert all(t is w for t, w in zip(tensors, [a.weight, a.bias, a.weight, b.bias]))
    assert cdata == [t._cdata for t in tensors]
    assert (first, numel, grad) == ([0, 1, 0, 3], [6, 2, 6, 2], [True, True, True, False])
    assert em._C.named_tensor_facts(modules, [(0, "count")], "_buffers")[2] == ([0], [4], [False])
    with pytest.raises(KeyError):
        em._C.named_tensor_facts(modules, [(1, "scale")], "_parameters")
    with pytest.raises(TypeError, match=r"each pair is \(module index, name\)"):
        em._C.named_tensor_facts(modules, [[0, "weight"]], "_parameters")
    with pytest.raises(IndexError, match="module index"):
        em._C.named_tensor_facts(modules, [(2, "weight")], "_parameters")
    broken = nn.Linear(2, 2)
    object.__setattr__(broken, "_parameters", [])
    with pytest.raises(TypeError, match="_parameters is not a dict"):
        em._C.named_tensor_facts([broken], [(0, "weight")], "_parameters")


def test_profiler_watch_takes_address_and_numel_pairs():
    """Profiler.watch, given (TensorImpl address, numel) pairs before every pass: a Linear's
    weight and bias are each applied once per forward (applied = touched = 12 + 3); a tensor
    never used (another Linear's weight) adds nothing. Bad input is a clear error."""
    lin, unused = nn.Linear(4, 3), nn.Linear(5, 5)
    p = em._C.Profiler()
    p.watch([(lin.weight._cdata, 12), (lin.bias._cdata, 3), (unused.weight._cdata, 25)],
            [5, -1, -1])
    p.start()
    lin(torch.randn(2, 4))
    raw = p.stop()
    assert (raw.params_applied, raw.params_touched) == (15, 15)
    with pytest.raises(ValueError, match="one count per tensor"):
        em._C.Profiler().watch([(lin.weight._cdata, 12)], [1, 2])
    with pytest.raises(TypeError, match=r"\(TensorImpl address, numel\) tuple"):
        em._C.Profiler().watch([lin.weight._cdata])
    with pytest.raises(TypeError):
        em._C.Profiler().watch([("weight", 12)])


def test_counts_follow_every_edit_between_profiles():
    """Ten kinds of edit; each must be seen by the walk kept since the first profile."""
    for edit in _edits():
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Identity(), nn.Linear(8, 8))
        em.profile(model, torch.randn(2, 8))  # walked and kept
        kept = edit(model)  # noqa: F841 (kept alive for the second profile)
        want = _expected(model)
        rep = em.profile(model, torch.randn(2, 8))
        pc = em.count_params(model)
        got = {"total": pc.total, "trainable": pc.trainable, "buffers": pc.buffers}
        assert got == {k: want[k] for k in got}, edit.__name__
        assert rep.params.total == want["total"], edit.__name__
        # parameters used in the pass are the model's own now (watched by their TensorImpls)
        assert rep.params.touched == want["total"], edit.__name__
        modules = set(rep.by_module().index) - {""}
        assert modules <= want["modules"], edit.__name__


def test_kept_walk_keeps_nothing_of_the_model_alive():
    import gc
    import weakref

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    em.profile(model, torch.randn(2, 8))
    # taken out after a profile (a head replaced, a weight swapped): freed with no new profile
    head, weight = weakref.ref(model[2]), weakref.ref(model[0].weight)
    model[2] = nn.Identity()
    model[0].weight = nn.Parameter(torch.randn(8, 8))
    gc.collect()
    assert head() is None and weight() is None
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_parameters_swap_after_a_profile():
    """torch.utils.swap_tensors refuses tensors with weak references (Module._apply uses it under
    torch.__future__.set_swap_module_params_on_conversion): profiling must leave none."""
    model = nn.Linear(4, 4)
    em.profile(model, torch.randn(1, 4))
    torch.utils.swap_tensors(model.weight, nn.Parameter(torch.zeros(4, 4)))
    assert not model.weight.detach().any()


def test_each_count_is_its_own_object():
    model = nn.Linear(4, 4)
    first, second = em.profile(model, torch.randn(1, 4), effective=True), em.profile(
        model, torch.randn(1, 4))
    assert first.params.nonzero == 20  # effective=True counts the nonzero weights
    assert second.params.nonzero is None  # not asked for here: not the first report's
    assert first.params is not second.params
