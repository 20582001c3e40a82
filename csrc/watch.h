// Watched parameters (Profiler::watch): params_applied counts numel times each use as a direct
// input of a top-level forward op; params_touched counts the numel of the distinct ones used.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace effmetrics {

class WatchedParams {
 public:
  // nonzero: the parameter's nonzero elements when known and it is a weight (2-D or more) whose
  // zeros flops_effective discounts; -1 otherwise.
  void add(const void* tensor_impl, int64_t numel, int64_t nonzero = -1) {
    if (index_.emplace(tensor_impl, numel_.size()).second) {
      numel_.push_back(numel);
      nonzero_.push_back(nonzero);
    }
  }
  bool empty() const { return numel_.empty(); }
  size_t size() const { return numel_.size(); }
  // One use of tensor_impl, counted in uses (a thread's slots, size()) when it is watched;
  // returns its index, or -1.
  int64_t count_use(const void* tensor_impl, std::vector<int64_t>& uses) const {
    auto it = index_.find(tensor_impl);
    if (it == index_.end()) return -1;
    ++uses[it->second];
    return static_cast<int64_t>(it->second);
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
  std::unordered_map<const void*, size_t> index_;  // read-only while running
  std::vector<int64_t> numel_;
  std::vector<int64_t> nonzero_;
};

}  // namespace effmetrics
