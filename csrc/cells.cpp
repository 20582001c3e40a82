#include "cells.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "op_names.h"

namespace effmetrics {

Cell& CellTable::at(uint64_t key) {
  if (2 * (used_.size() + 1) > slots_.size()) grow();
  Slot* s = find(key);
  if (!s->used) {
    s->used = true;
    s->key = key;
    s->cell = Cell{};
    used_.push_back(static_cast<uint32_t>(s - slots_.data()));
  }
  return s->cell;
}

void CellTable::clear() {
  for (uint32_t i : used_) slots_[i].used = false;
  used_.clear();
}

CellTable::Slot* CellTable::find(uint64_t key) {
  const size_t mask = slots_.size() - 1;
  // Fibonacci hashing: the product's top bits depend on every bit of the key (its low bits
  // only on the key's low bits: the scope, in the high half, would not move the slot, and every
  // module's cells of one op would share a probe chain).
  size_t i = fibonacci_slot(key, 64 - shift_);
  while (slots_[i].used && slots_[i].key != key) i = (i + 1) & mask;
  return &slots_[i];
}

void CellTable::grow() {
  std::vector<Slot> old(slots_.size() * 2);
  --shift_;
  old.swap(slots_);
  std::vector<uint32_t> used;
  used.swap(used_);
  used_.reserve(used.capacity());
  for (uint32_t i : used) at(old[i].key) = old[i].cell;
}

std::vector<RawCell> merge_cells(std::vector<std::pair<uint64_t, Cell>> keyed_cells) {
  // Sorted by key through (key, index) pairs: a Cell is 17 words, too big to move around.
  std::vector<std::pair<uint64_t, uint32_t>> sorted(keyed_cells.size());
  for (size_t i = 0; i < keyed_cells.size(); ++i) {
    sorted[i] = {keyed_cells[i].first, static_cast<uint32_t>(i)};
  }
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::pair<uint64_t, Cell>> keyed;  // one per key, ascending
  keyed.reserve(sorted.size());
  for (const auto& [key, i] : sorted) {
    if (!keyed.empty() && keyed.back().first == key) {
      keyed.back().second.counts.add(keyed_cells[i].second.counts);
    } else {
      keyed.push_back(keyed_cells[i]);
    }
  }
  std::vector<uint32_t> ops;  // distinct op ids, ascending
  for (const auto& kc : keyed) ops.push_back(CellKey::unpack(kc.first).op);
  std::sort(ops.begin(), ops.end());
  ops.erase(std::unique(ops.begin(), ops.end()), ops.end());
  std::vector<std::string_view> names = op_names(ops);
  std::vector<uint32_t> by_name(ops.size());  // indices into ops, in name order
  std::iota(by_name.begin(), by_name.end(), 0u);
  std::sort(by_name.begin(), by_name.end(),
            [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });
  std::vector<uint32_t> rank(ops.size());  // rank[i]: the place of ops[i] in name order
  for (uint32_t r = 0; r < by_name.size(); ++r) rank[by_name[r]] = r;
  auto slot = [&](uint32_t op) {
    return static_cast<size_t>(std::lower_bound(ops.begin(), ops.end(), op) - ops.begin());
  };
  std::vector<std::pair<uint64_t, size_t>> order;  // (scope, op rank, phase, unsupported)
  order.reserve(keyed.size());
  for (size_t i = 0; i < keyed.size(); ++i) {
    const CellKey k = CellKey::unpack(keyed[i].first);
    const uint64_t sort_key = uint64_t{k.scope} << 32 | uint64_t{rank[slot(k.op)]} << 2 |
                              static_cast<uint64_t>(k.phase) << 1 | uint64_t{k.unsupported};
    order.emplace_back(sort_key, i);
  }
  std::sort(order.begin(), order.end());
  std::vector<RawCell> cells(keyed.size());
  for (size_t n = 0; n < order.size(); ++n) {
    const auto& [key, cell] = keyed[order[n].second];
    const CellKey k = CellKey::unpack(key);
    RawCell& raw = cells[n];
    raw.scope = k.scope;
    raw.op = names[slot(k.op)];
    raw.phase = k.phase;
    raw.kind = cell.kind;
    raw.counts = cell.counts;
  }
  return cells;
}

}  // namespace effmetrics
