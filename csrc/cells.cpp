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
  // Op ids are dense (interned in order): the distinct ones found by marking, and each one's
  // rank in name order looked up by id (no search per cell). rank_of has at most one entry per
  // name interned in the process, a few bytes beside each name's own storage.
  constexpr uint32_t kAbsent = ~uint32_t{0};
  std::vector<uint32_t> rank_of;  // by op id: kAbsent, or the op's place in name order
  std::vector<uint32_t> ops;      // distinct op ids, in first-seen order
  for (const auto& kc : keyed_cells) {
    const uint32_t op = CellKey::unpack(kc.first).op;
    if (op >= rank_of.size()) rank_of.resize(size_t{op} + 1, kAbsent);
    if (rank_of[op] == kAbsent) {
      rank_of[op] = 0;
      ops.push_back(op);
    }
  }
  const std::vector<std::string_view> names = op_names(ops);
  std::vector<uint32_t> by_name(ops.size());  // indices into ops, in name order
  std::iota(by_name.begin(), by_name.end(), 0u);
  std::sort(by_name.begin(), by_name.end(),
            [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });
  for (uint32_t r = 0; r < by_name.size(); ++r) rank_of[ops[by_name[r]]] = r;
  // One sort of (order key, index) pairs (a Cell is 17 words, too big to move around). The order
  // key is the cell key with the op's id replaced by its rank, (scope, op rank, phase,
  // unsupported): one order key per cell key, so the cells of one key (one per thread) come
  // together, in the threads' order.
  std::vector<std::pair<uint64_t, uint32_t>> order(keyed_cells.size());
  for (size_t i = 0; i < keyed_cells.size(); ++i) {
    const CellKey k = CellKey::unpack(keyed_cells[i].first);
    order[i] = {uint64_t{k.scope} << 32 | uint64_t{rank_of[k.op]} << 2 |
                    static_cast<uint64_t>(k.phase) << 1 | uint64_t{k.unsupported},
                static_cast<uint32_t>(i)};
  }
  std::sort(order.begin(), order.end());
  std::vector<RawCell> cells;
  cells.reserve(order.size());
  for (size_t n = 0; n < order.size(); ++n) {
    const auto& [key, cell] = keyed_cells[order[n].second];
    if (n > 0 && order[n].first == order[n - 1].first) {
      cells.back().counts.add(cell.counts);
      continue;
    }
    const CellKey k = CellKey::unpack(key);
    cells.push_back(
        RawCell{k.scope, names[by_name[rank_of[k.op]]], k.phase, cell.kind, cell.counts});
  }
  return cells;
}

}  // namespace effmetrics
