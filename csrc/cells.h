// Aggregation: each thread adds its ops' counts into cells keyed by (module scope, op, phase,
// unsupported); a report merges every thread's cells into rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "effmetrics/report.h"

namespace effmetrics {

struct CellKey {
  uint32_t scope = kRootScope;
  uint32_t op = 0;  // interned op id (op_names.h): dense, counting up from 0, below 2^30
  Phase phase = Phase::kForward;
  // An op counted by a rule and the same op listed as unsupported (no dense shapes) keep apart.
  bool unsupported = false;

  // scope << 32 | op << 2 | unsupported << 1 | phase: the one place the layout is written.
  uint64_t pack() const {
    return uint64_t{scope} << 32 | uint64_t{op} << 2 | uint64_t{unsupported} << 1 |
           static_cast<uint64_t>(phase);
  }
  static CellKey unpack(uint64_t key) {
    return CellKey{static_cast<uint32_t>(key >> 32),
                   static_cast<uint32_t>((key >> 2) & 0x3fffffffu), static_cast<Phase>(key & 1),
                   ((key >> 1) & 1) != 0};
  }
};

struct Cell {
  OpKind kind = OpKind::kUnsupported;
  Counts counts;
};

// Cells by packed key in an open-addressing table that only allocates when it grows: the
// profiled model's own large allocations should find the heap as they left it (per-op node
// allocations interleaved with them fragment it and multiply the page faults of the next forward).
// Fibonacci hashing: the top `bits` bits of key * 2^64/phi, which every bit of the key reaches
// (the cell table's slots, the op-name slots).
inline size_t fibonacci_slot(uint64_t key, int bits) {
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> (64 - bits));
}

class CellTable {
 public:
  CellTable() { slots_.resize(size_t{1} << (64 - shift_)); }
  Cell& at(uint64_t key);
  // Visits the used slots only (the table is mostly empty and cold when a report is built).
  template <typename F>
  void for_each(F&& f) const {
    for (uint32_t i : used_) f(slots_[i].key, slots_[i].cell);
  }
  size_t size() const { return used_.size(); }
  void clear();

 private:
  struct Slot {
    uint64_t key = 0;
    bool used = false;
    Cell cell;
  };
  Slot* find(uint64_t key);
  void grow();
  int shift_ = 64 - 10;  // 64 - log2(slots_.size()): 1024 slots to start
  std::vector<Slot> slots_;
  std::vector<uint32_t> used_;  // indices of the used slots, in insertion order
};

// One RawCell per key (the threads' cells summed) in a deterministic order: by scope node, then
// op name, then phase, then unsupported. Op names are looked up once per distinct op.
std::vector<RawCell> merge_cells(std::vector<std::pair<uint64_t, Cell>> keyed);

}  // namespace effmetrics
