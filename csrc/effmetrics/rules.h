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
  kUnsupported,  // no rule: listed in unsupported_ops, bytes still counted
};
const char* kind_name(OpKind kind);

// The cost of one op call. bytes_* < 0 means "the generic count": distinct input tensors read,
// output tensors written.
struct OpCost {
  int64_t macs = 0;
  int64_t flops = 0;
  int64_t bytes_read = -1;
  int64_t bytes_written = -1;
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
// innermost op that has one (contiguous -> clone -> copy_ counts the copy_).
inline bool owns_children(const OpRule& rule) {
  return rule.kind == OpKind::kMatmul || rule.kind == OpKind::kVector;
}

// The rule for an op name (without overload), or nullptr.
const OpRule* find_rule(std::string_view op_name);
// Every rule, in table order (tests iterate it; the README documents it).
const std::vector<OpRule>& all_rules();
// Evaluate a rule, filling generic byte counts where the rule leaves them at -1.
OpCost evaluate(const OpRule& rule, const OpCall& call);

}  // namespace effmetrics
