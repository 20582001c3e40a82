// Op names, interned once per process: the hot path keys cells and trace events by a small id,
// and each name's rule (and whether it is a dispatcher operator) is looked up once.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "effmetrics/rules.h"

namespace effmetrics {

struct OpInfo {
  uint32_t id = 0;
  const char* name = nullptr;  // interned, stable
  const OpRule* rule = nullptr;
  const AttentionArgs* attention = nullptr;  // an attention op (flops_effective's masks)
  bool is_op = false;  // a dispatcher operator (vs. a named region or an autograd node)
  // A region of code torch.compile generated ("Torch-Compiled Region: 0/0"): its fused
  // kernels are not ops.
  bool compiled_region = false;
  // A process-group backend's record of one work ("gloo:all_reduce", "nccl:send"): a user-scope
  // RecordFunction that starts and ends where the work does (gloo: its worker thread; p2p: from
  // posting to the end of its wait), not nested in the ops around it. Its time is the
  // collective's.
  bool comm_work = false;
  bool recv = false;     // a point-to-point receive (c10d op or backend work): waiting for a peer
  bool barrier = false;  // a c10d barrier (or its backend work): moves nothing
  // Whether the op runs a kernel of its own (CPU, CUDA, ...), not a composite of other ops:
  // 1 yes, 0 no or trusted (a composite rule: its kernel's work is the ops it runs), -1 not
  // looked up yet (the observer asks the dispatcher when it first needs it, per thread).
  mutable int8_t own_kernel = -1;
  // Learned by a thread's cache entry (each ThreadBuffer has its own copies), for muting: the
  // records seen nested in the op when last observed (-1: not yet), and the calls left before
  // it is observed again (an op's nesting can change with its inputs).
  mutable int32_t nested = -1;
  mutable uint16_t calls_until_observed = 0;
};

// The interned name (stable storage: thread caches key on it) and what we know of the op;
// is_op: the name is a dispatcher operator's (the first call decides). Thread-safe; takes a
// lock, so callers cache the result per thread. The rule is the one registered now: after a
// register_rule/unregister_rule (rules_version() changed) every name's rule is looked up again,
// and callers drop their caches at the next profiler start.
std::pair<std::string_view, OpInfo> resolve_op(const char* name, bool is_op);
// Interned names by id, in the order given (views of stable storage, valid for the process).
std::vector<std::string_view> op_names(const std::vector<uint32_t>& ids);

}  // namespace effmetrics
