// Attribution of backward ops: an autograd node's sequence number equals that of the forward op
// that created it, so each thread records (sequence number, module scope) of its forward ops, and
// a backward node looks up the scope of the last forward op at or before its number.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace effmetrics {

class SeqScopes {
 public:
  void reserve(size_t n) { seq_scopes_.reserve(n); }
  void clear() {
    seq_scopes_.clear();
    last_seq_ = -1;
  }
  // A forward op with sequence number seq started in scope; sequence numbers only grow on a
  // thread, and the ops nested in one share its number (the first is kept).
  void record(int64_t seq, uint32_t scope) {
    if (seq < 0 || seq == last_seq_) return;
    seq_scopes_.emplace_back(seq, scope);
    last_seq_ = seq;
  }
  // The scope of the last forward op that started at or before seq; false when there is none.
  bool find(int64_t seq, uint32_t* scope) const {
    auto it =
        std::upper_bound(seq_scopes_.begin(), seq_scopes_.end(), std::make_pair(seq, UINT32_MAX));
    if (it == seq_scopes_.begin()) return false;
    *scope = std::prev(it)->second;
    return true;
  }

 private:
  std::vector<std::pair<int64_t, uint32_t>> seq_scopes_;  // ascending
  int64_t last_seq_ = -1;
};

}  // namespace effmetrics
