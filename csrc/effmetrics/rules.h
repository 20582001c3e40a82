// The op rule table: op name -> {kind, cost function}. One table (rules.cpp), one small pure
// function per op family. Counting conventions are documented in README.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "effmetrics/op_call.h"

namespace effmetrics {

enum class OpKind : uint8_t {
  kMatmul,       // tensor-core eligible: mm, addmm, bmm, baddbmm, conv, SDPA
  kVector,       // elementwise, activations, norms, softmax, reductions, pooling
  kMemory,       // no FLOPs, moves bytes: copies, cat, index, embedding
  kView,         // no FLOPs, no bytes: views, allocation, metadata
  kCollective,   // no FLOPs, no memory traffic: c10d collectives and p2p (comm bytes, group)
  kUnsupported,  // no rule: listed in unsupported_ops, bytes still counted
  // No count of its own: its kernel (a CPU or CUDA kernel, not a composite) runs the ATen ops
  // that do its work, and they count (the MultiheadAttention fast path). The observer treats
  // it as an op without a rule; without this kind, an op with its own kernel and no rule is
  // listed in unsupported_ops even where the ops inside it counted FLOPs, since its kernel
  // may compute outside ATen (oneDNN's LSTM, LAPACK) and run only a small ATen op inside.
  kComposite,
};
const char* kind_name(OpKind kind);

// The cost of one op call. Rules build it through the named constructors, which say what they
// mean: `bytes_* == kGenericBytes` stands for the generic count (distinct input tensors read,
// output tensors written), filled in by evaluate().
struct OpCost {
  static constexpr int64_t kGenericBytes = -1;
  static constexpr int64_t kSameAsFlops = -1;
  int64_t macs = 0;
  int64_t flops = 0;
  int64_t bytes_read = kGenericBytes;
  int64_t bytes_written = kGenericBytes;
  // The work left once known-unnecessary work is removed (README: "flops_effective"); the
  // observer scales matmul-class ops by causal masks, boolean masks and zero weights. A rule
  // leaves it kSameAsFlops unless it knows better.
  int64_t flops_effective = kSameAsFlops;
  // Collectives: the data size of the collective on this rank (nccl-tests' "size"), the bus
  // bytes (size x the algorithm's factor for the group size) and the group size (0: unknown).
  int64_t comm_bytes = 0;
  int64_t comm_bus_bytes = 0;
  int64_t comm_ranks = 0;

  // FLOPs = 2 x MACs; the generic bytes.
  static OpCost matmul(int64_t macs) { return OpCost{macs, 2 * macs}; }
  // Vector FLOPs; the generic bytes.
  static OpCost vector(int64_t flops) { return OpCost{0, flops}; }
  // No FLOPs; the generic bytes.
  static OpCost generic_bytes() { return OpCost{}; }
  // No FLOPs; exactly these bytes.
  static OpCost bytes(int64_t read, int64_t written) { return OpCost{0, 0, read, written}; }
  // No FLOPs, no bytes.
  static OpCost none() { return OpCost{0, 0, 0, 0}; }
  // A collective: no FLOPs, no memory traffic; its communication.
  static OpCost collective(int64_t size, int64_t bus, int64_t group_size) {
    OpCost c = none();
    c.comm_bytes = size;
    c.comm_bus_bytes = bus;
    c.comm_ranks = group_size;
    return c;
  }
};

using CostFn = OpCost (*)(const OpCall&);
// A registered rule (register_rule): any callable; it may throw (the op is then listed as
// unsupported and the error kept in Report::rule_errors).
using RuleFn = std::function<OpCost(const OpCall&)>;

struct OpRule {
  const char* name;  // "aten::addmm"
  OpKind kind;
  CostFn cost;                 // built-in rules
  const char* formula = "";    // what the rule counts, in one line (rules(), the README)
  const RuleFn* fn = nullptr;  // registered rules: called instead of cost
  bool user = false;           // registered by register_rule
};

// An op with a FLOP rule (matmul or vector class) accounts for its whole subtree: whatever its
// kernel dispatches below it (cuDNN vs mkldnn convolution, a bias copy inside addmm, the sum
// inside mean) is part of its cost and is not counted again. Memory and view rules count at the
// innermost op that has one (contiguous -> clone -> copy_ counts the copy_). A collective owns
// its subtree too: the copies a backend makes into its buffers are part of the communication.
inline bool owns_children(const OpRule& rule) {
  return rule.kind == OpKind::kMatmul || rule.kind == OpKind::kVector ||
         rule.kind == OpKind::kCollective;
}

// The rule for an op name with its namespace ("aten::addmm", "c10d::allreduce_"), or
// nullptr. A registered rule wins over the built-in one of the same name.
const OpRule* find_rule(std::string_view op_name);

// Registers (or replaces) the rule of op_name ("mylib::my_op", no overload): for custom ops,
// ops the table lacks, or to override a built-in rule. kind: matmul, vector, memory, view or
// composite (its cost is never called, and may be empty); throws std::invalid_argument
// otherwise, or for an empty name or (other kinds) an empty callable. Thread-safe.
// Takes effect for profilers started after the call; a profiler already running applies it
// only to op names its threads meet for the first time (never half an op). The callable is kept
// alive for the life of the process (a running profiler may still hold it).
void register_rule(const std::string& op_name, OpKind kind, RuleFn cost,
                   const std::string& formula = "user rule");
// Removes a registered rule (the built-in one, if any, applies again); false if none was
// registered. Same timing as register_rule.
bool unregister_rule(const std::string& op_name);
// Bumped by every register_rule/unregister_rule: caches of resolved rules compare it.
uint64_t rules_version();

// One row of rules(): every built-in rule and every registered one.
struct RuleRow {
  std::string op;
  OpKind kind = OpKind::kUnsupported;
  std::string formula;
  bool user = false;        // registered by register_rule
  bool overridden = false;  // a built-in rule a registered one replaces
};
std::vector<RuleRow> rule_rows();

// SDPA's causal mask (is_causal=True) as torch's CPU kernels and the math path apply it:
// top-left aligned, query i attends keys j <= i. The (query, key) pairs kept for sq queries
// and sk keys: sum over i < sq of min(i + 1, sk).
int64_t causal_kept_pairs(int64_t sq, int64_t sk);

// Attention ops whose arguments say which scores are needed: where to read them (schema
// positions; -1: absent). Looked up once per op name.
struct AttentionArgs {
  int query, key, mask, causal;
  bool bshd;  // [b, s, h, d] layout (else [b, h, s, d])
};
const AttentionArgs* find_attention(std::string_view op_name);
// Every rule, in table order (tests iterate it; the README documents it).
const std::vector<OpRule>& all_rules();
// Evaluate a rule, filling the generic byte counts where the rule asks for them.
OpCost evaluate(const OpRule& rule, const OpCall& call);

}  // namespace effmetrics
