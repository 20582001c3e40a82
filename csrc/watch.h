// Watched parameters (Profiler::watch): params_applied counts numel times each use as a direct
// input of a top-level forward op; params_touched counts the numel of the distinct ones used.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "cells.h"  // fibonacci_slot

namespace effmetrics {

// By TensorImpl address in an open-addressing table (Fibonacci hashing, linear probing, at most
// half full): no allocation per parameter (a node map made ~150 allocations per profile of a
// ViT and freed them at its end), and a lookup on the per-op path is a multiply and a compare.
class WatchedParams {
 public:
  // nonzero: the parameter's nonzero elements when known and it is a weight (2-D or more) whose
  // zeros flops_effective discounts; -1 otherwise. A tensor added again keeps its first entry.
  void add(const void* tensor_impl, int64_t numel, int64_t nonzero = -1) {
    if (tensor_impl == nullptr) return;  // no tensor has it; it marks the empty slots
    if (2 * (numel_.size() + 1) > slots_.size()) grow();
    Slot& s = slots_[find(tensor_impl)];
    if (s.key == tensor_impl) return;
    s = Slot{tensor_impl, numel_.size()};
    numel_.push_back(numel);
    nonzero_.push_back(nonzero);
  }
  bool empty() const { return numel_.empty(); }
  size_t size() const { return numel_.size(); }
  // One use of tensor_impl, counted in uses (a thread's slots, size()) when it is watched;
  // returns its index, or -1.
  int64_t count_use(const void* tensor_impl, std::vector<int64_t>& uses) const {
    if (slots_.empty() || tensor_impl == nullptr) return -1;
    const Slot& s = slots_[find(tensor_impl)];
    if (s.key != tensor_impl) return -1;
    ++uses[s.index];
    return static_cast<int64_t>(s.index);
  }
  int64_t numel(size_t i) const { return numel_[i]; }
  int64_t nonzero(size_t i) const { return nonzero_[i]; }
  // (params_applied, params_touched) from the uses summed over threads.
  std::pair<int64_t, int64_t> totals(const std::vector<int64_t>& uses) const {
    int64_t applied = 0, touched = 0;
    for (size_t i = 0; i < numel_.size(); ++i) {
      applied += uses[i] * numel_[i];
      if (uses[i] > 0) touched += numel_[i];
    }
    return {applied, touched};
  }

 private:
  struct Slot {
    const void* key = nullptr;  // null: empty
    size_t index = 0;
  };
  // The slot holding key, or the empty one where it would go (the table is never full).
  size_t find(const void* key) const {
    const size_t mask = slots_.size() - 1;
    size_t i = fibonacci_slot(reinterpret_cast<uintptr_t>(key), bits_);
    while (slots_[i].key != key && slots_[i].key != nullptr) i = (i + 1) & mask;
    return i;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    bits_ = bits_ == 0 ? 4 : bits_ + 1;
    slots_.assign(size_t{1} << bits_, Slot{});
    for (const Slot& s : old) {
      if (s.key != nullptr) slots_[find(s.key)] = s;
    }
  }
  std::vector<Slot> slots_;  // read-only while running
  int bits_ = 0;
  std::vector<int64_t> numel_;
  std::vector<int64_t> nonzero_;
};

}  // namespace effmetrics
