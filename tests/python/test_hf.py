"""Hugging Face transformers models, called as users call them.

`em.profile(model, **batch)` with a tokenizer-like dict, models built on `meta` from a config,
and `em.profile(model.generate, ...)`. Every model is built from a config (no hub downloads, no
weights, no tokenizer). Published parameter counts are pinned; matmul MACs are checked against
closed forms derived here from the model shapes.

What works on meta (transformers 5.x): BERT, GPT-2 and LLaMA forwards with `input_ids` only
(the default sdpa attention decomposes to bmm + softmax on meta). Passing an `attention_mask`
on meta fails inside transformers' mask helpers, which read the mask's values (`.all()` then
`.item()`) to decide whether the mask can be dropped; meta tensors have no values. See
test_attention_mask_on_meta_is_a_transformers_limit.
"""
import inspect
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install transformers)")

import effmetrics as em  # noqa: E402
from references import reference_flops  # noqa: E402

# ---------------------------------------------------------------------------------- BERT-base

BERT_T = 8  # tiny sequence: a real CPU forward of the full-size model stays cheap


@pytest.fixture(scope="module")
def bert():
    """BERT-base (BertModel: embeddings, 12 layers, pooler) on CPU, eval, and a tokenizer-like
    batch."""
    model = transformers.BertModel(transformers.BertConfig()).eval()
    gen = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, 30522, (1, BERT_T), generator=gen),
        "attention_mask": torch.ones(1, BERT_T, dtype=torch.long),
        "token_type_ids": torch.zeros(1, BERT_T, dtype=torch.long),
    }
    return model, batch


def test_bert_base_published_params_on_meta():
    cfg = transformers.BertConfig()
    with torch.device("meta"):
        full = transformers.BertModel(cfg)
        no_pooler = transformers.BertModel(cfg, add_pooling_layer=False)
    # the published "110M" of BERT-Base is BertModel with its pooler (768x768 dense + bias)
    assert em.count_params(full).total == 109_482_240
    assert em.count_params(no_pooler).total == 109_482_240 - (768 * 768 + 768)


def test_bert_base_tokenizer_dict_on_cpu(bert):
    model, batch = bert
    with torch.no_grad():
        rep = em.profile(model, **batch)  # as users call it: model(**tokenizer(text))
    assert rep.params.total == 109_482_240
    assert rep.params.applied == 109_482_240  # nothing tied, every parameter used once
    # every op it ran has a rule (the mask check's aten::all / item included): no silent zero
    assert rep.unsupported_ops == {}
    assert rep.flops > rep.flops_matmul > 0 and rep.bytes_read > 0
    # closed form, T tokens, d=768, FFN 3072, 12 layers: per layer Q,K,V,O 4*T*d^2, FFN
    # 2*T*d*3072, attention QK^T and AV 2*T^2*d; the pooler reads the first token: d^2
    T, d, F, L = BERT_T, 768, 3072, 12
    assert rep.macs_matmul == L * (4 * T * d * d + 2 * T * d * F + 2 * T * T * d) + d * d
    # module rows carry HF's qualified names
    df = rep.by_module()
    query = df.loc["encoder.layer.0.attention.self.query"]
    assert query["calls"] == 1 and query["macs_matmul"] == T * d * d
    assert query["params"] == d * d + d
    for name in ("embeddings.word_embeddings", "encoder.layer.11.output.dense", "pooler.dense"):
        assert name in df.index, name


def test_bert_base_matches_flop_counter_mode(bert):
    model, batch = bert
    with torch.no_grad():
        rep = em.profile(model, **batch)
        # FlopCounterMode counts matmul-class ops only; references registers torch's SDPA
        # formula for the CPU flash kernel, which torch 2.13's registry lacks
        ref = reference_flops(lambda: model(**batch))
    assert rep.flops_matmul == ref


# ---------------------------------------------------------------------------------- GPT-2

GPT2_T = 64  # batch 1, 64 tokens (n_ctx = 1024 plays no role in the count)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_params_and_closed_form_macs_on_meta(attn):
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(attn_implementation=attn)).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    rep = em.profile(model, input_ids=torch.zeros(1, GPT2_T, dtype=torch.long, device="meta"))
    assert rep.unsupported_ops == {}

    wte = model.transformer.wte.weight.numel()
    assert wte == 50257 * 768
    assert rep.params.total == 124_439_808  # the published GPT-2 small count (unique)
    assert rep.params.shared == wte  # wte.weight is also reachable as lm_head.weight
    # applied: each parameter's numel times its uses in the forward. named_parameters()
    # lists the tied matrix once (as transformer.wte.weight); it is used twice (the embedding
    # lookup and lm_head's matmul), every other parameter once
    uses = {name: 1 for name, _ in model.named_parameters()}
    uses["transformer.wte.weight"] = 2
    applied = sum(p.numel() * uses[name] for name, p in model.named_parameters())
    assert applied == 124_439_808 + 38_597_376
    assert rep.params.applied == applied

    # closed form: per layer QKV T*d*3d, QK^T T*T*d, AV T*T*d, proj T*d*d, MLP 2*T*d*4d;
    # lm_head T*d*V. Both attention paths compute the full T x T scores (the causal mask is
    # applied to them, not skipped): effmetrics does not discount causal masking
    T, d, V, L = GPT2_T, 768, 50257, 12
    per_layer = T * d * 3 * d + T * T * d + T * T * d + T * d * d + 2 * T * d * 4 * d
    assert rep.macs_matmul == L * per_layer + T * d * V == 7_981_547_520
    assert rep.flops_matmul == 2 * rep.macs_matmul


# ---------------------------------------------------------------------------------- LLaMA-2-7B

def test_llama2_7b_shape_on_meta():
    cfg = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
        tie_word_embeddings=False)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg).eval()
    T = 32
    rep = em.profile(model, input_ids=torch.zeros(1, T, dtype=torch.long, device="meta"))
    assert rep.params.total == 6_738_415_616  # LLaMA-2-7B
    assert rep.params.applied == rep.params.total  # untied: every matrix used once
    assert rep.params.embedding == 32000 * 4096
    assert rep.unsupported_ops == {}
    # closed form: per layer q,k,v,o 4*T*d^2, SwiGLU MLP (gate, up, down) 3*T*d*11008,
    # attention QK^T + AV 2*T^2*d (full T x T, no causal discount); lm_head T*d*V
    d, F, V, L = 4096, 11008, 32000, 32
    assert rep.macs_matmul == L * (4 * T * d * d + 3 * T * d * F + 2 * T * T * d) + T * d * V


# ---------------------------------------------------------------------------------- generate

def test_gpt2_generate_counts_every_forward():
    # eos/pad inside the tiny vocabulary, as a real tokenizer's would be
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000,
                                  n_positions=64, bos_token_id=998, eos_token_id=999,
                                  pad_token_id=999)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    P, new = 5, 3
    ids = torch.randint(0, 998, (1, P), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=new, do_sample=False)  # greedy: both runs take the same path

    rep = em.profile(model.generate, ids, **kwargs)
    assert model.generate(ids, **kwargs).shape == (1, P + new)  # no early stop at eos
    ref = reference_flops(lambda: model.generate(ids, **kwargs))
    assert rep.flops_matmul == ref  # the oracle: FlopCounterMode around the same call

    # closed form: one prefill of P tokens, then new-1 decode steps of 1 token against the KV
    # cache (kv length P+1, P+2). generate asks for the last position's logits only
    # (logits_to_keep=1), so lm_head runs on one token per forward
    d, V, L = 64, 1000, 2

    def forward_macs(q, kv):
        return L * (q * d * 3 * d + 2 * q * kv * d + q * d * d + 2 * q * d * 4 * d) + d * V

    macs = forward_macs(P, P) + sum(forward_macs(1, P + i) for i in range(1, new))
    assert rep.macs_matmul == macs and rep.flops_matmul == 2 * macs

    df = rep.by_module()  # module rows through the bound method's model
    assert df.loc["lm_head", "calls"] == new and df.loc["transformer.h.1.attn", "calls"] == new
    # each forward applies every parameter once and the tied wte twice
    wte = model.transformer.wte.weight.numel()
    assert rep.params.applied == new * (rep.params.total + wte)
    # generate's setup and stopping criterion call torch.isin (tokens against the eos and pad
    # ids): counted (test_api has its formula), nothing listed
    assert rep.unsupported_ops == {} and rep.by_op().loc["aten::isin", "flops"] > 0


def test_gpt2_decode_loop_with_a_kv_cache_counts_each_step():
    """A decode loop passes the same DynamicCache to every forward, one position longer each
    time: Counter(count="auto") counts each step (the cache's tensors are part of the call's
    signature) and its rows equal count="every"'s. Its attention grows with the cache."""
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    prompt = torch.randint(0, 1000, (1, 5), generator=torch.Generator().manual_seed(0))

    # transformers 5.25 renamed past_key_values to cache (the old name warns, then goes)
    name = ("cache" if "cache" in inspect.signature(model.forward).parameters
            else "past_key_values")

    def run(count):
        cache = transformers.DynamicCache(config=cfg)
        ids = prompt
        with torch.no_grad(), em.Counter(model, count=count) as c:
            for _ in range(4):
                out = model(ids, use_cache=True, **{name: cache})
                ids = out.logits[:, -1:].argmax(-1)
                c.step()
        return c.steps

    every, auto = run("every"), run("auto")
    assert auto["counted"].all()
    counts = ["flops", "macs", "bytes_read", "bytes_written"]
    assert auto[counts].equals(every[counts])
    # decode steps 1..3 attend over 6, 7, 8 positions: 2 layers x 2 x (1 x kv x 64) MACs more
    # per position
    assert every["macs"].diff()[2:].tolist() == [2 * 2 * 64] * 2


def test_mixtral_experts_counted_on_meta_and_cpu_against_the_closed_form():
    """Mixtral's experts run as torch._grouped_mm in transformers 5 (one kernel on CUDA and on
    meta, where it was listed and the experts' MACs lost: 193,536 of 635,904 counted on meta).
    bf16: torch's meta kernel for it takes bf16 only."""
    cfg = transformers.MixtralConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                     num_key_value_heads=1, intermediate_size=64, vocab_size=100,
                                     num_local_experts=4, num_experts_per_tok=2)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    t, d, f, layers, experts, top_k, vocab = 18, 32, 64, 2, 4, 2, 100
    head, kv_heads = 16, 1
    attention = t * d * d + 2 * t * d * kv_heads * head + t * d * d + 2 * t * 9 * d
    moe = t * top_k * 3 * d * f + t * d * experts  # routed tokens' SwiGLU experts, the router
    macs = layers * (attention + moe) + t * d * vocab
    for device in ("meta", "cpu"):
        with torch.device(device):
            model = transformers.MixtralForCausalLM(cfg).to(torch.bfloat16)
        rep = em.profile(model, ids.to(device))
        assert rep.unsupported_ops == {} and rep.macs == macs, device


# ------------------------------------------------------------------------ attention mask on meta

def _tiny(kind: str):
    if kind == "bert":
        return transformers.BertModel(transformers.BertConfig(
            num_hidden_layers=1, hidden_size=64, num_attention_heads=2, intermediate_size=128,
            vocab_size=100)).eval()
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=64, n_head=2, vocab_size=100, bos_token_id=99,
        eos_token_id=99)).eval()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_attention_mask_on_meta_is_a_transformers_limit(kind):
    T = 8
    with torch.device("meta"):
        model = _tiny(kind)
    batch = {"input_ids": torch.zeros(1, T, dtype=torch.long, device="meta"),
             "attention_mask": torch.ones(1, T, dtype=torch.long, device="meta")}
    # transformers' masking_utils checks `padding_mask.all()` in Python to drop an all-ones
    # mask: a value read, impossible on meta. effmetrics lets torch's error through unchanged,
    # exactly as the bare call raises it
    with pytest.raises(RuntimeError, match=r"item\(\) cannot be called on meta tensors") as bare:
        model(**batch)
    with pytest.raises(RuntimeError,
                       match=r"item\(\) cannot be called on meta tensors") as profiled:
        em.profile(model, **batch)
    for info in (bare, profiled):
        assert any(str(f.path).endswith("masking_utils.py") for f in info.traceback)

    # the workaround: an all-ones mask changes no count, so drop it on meta; the profiler was
    # cleaned up by the failure and counts the same model again, equal to a real CPU forward
    # with the mask
    del batch["attention_mask"]
    on_meta = em.profile(model, **batch)
    torch.manual_seed(0)
    cpu_model = _tiny(kind)
    cpu_batch = {"input_ids": torch.zeros(1, T, dtype=torch.long),
                 "attention_mask": torch.ones(1, T, dtype=torch.long)}
    with torch.no_grad():
        on_cpu = em.profile(cpu_model, **cpu_batch)
    assert on_meta.unsupported_ops == on_cpu.unsupported_ops == {}
    assert on_meta.macs_matmul == on_cpu.macs_matmul > 0
    assert on_meta.params.total == on_cpu.params.total


def test_meta_value_read_error_names_the_fix():
    with torch.device("meta"):
        model = _tiny("gpt2")
    batch = {"input_ids": torch.zeros(1, 8, dtype=torch.long, device="meta"),
             "attention_mask": torch.ones(1, 8, dtype=torch.long, device="meta")}
    with pytest.raises(RuntimeError, match=r"item\(\) cannot be called on meta tensors") as info:
        em.profile(model, **batch)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "effmetrics" in notes and "attention_mask" in notes
