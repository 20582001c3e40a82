// The op rule table: op name -> {kind, cost function}. One table (rules.cpp), one small pure
// function per op family. Counting conventions are documented in README.md.
#pragma once

#include <cstdint>
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
};
const char* kind_name(OpKind kind);

// The cost of one op call. Rules build it through the named constructors, which say what they
// mean: `bytes_* == kGenericBytes` stands for the generic count (distinct input tensors read,
// output tensors written), filled in by evaluate().
struct OpCost {
  static constexpr int64_t kGenericBytes = -1;
  int64_t macs = 0;
  int64_t flops = 0;
  int64_t bytes_read = kGenericBytes;
  int64_t bytes_written = kGenericBytes;
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
    return OpCost{0, 0, 0, 0, size, bus, group_size};
  }
};

using CostFn = OpCost (*)(const OpCall&);

struct OpRule {
  const char* name;  // "aten::addmm"
  OpKind kind;
  CostFn cost;
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

// The rule for an op name with its namespace ("aten::addmm", "c10d::allreduce_"), or nullptr.
const OpRule* find_rule(std::string_view op_name);
// Every rule, in table order (tests iterate it; the README documents it).
const std::vector<OpRule>& all_rules();
// Evaluate a rule, filling the generic byte counts where the rule asks for them.
OpCost evaluate(const OpRule& rule, const OpCall& call);

}  // namespace effmetrics
