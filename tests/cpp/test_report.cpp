// Report aggregation on hand-made cells: inclusive = self + children, tree order, JSON.
#include <gtest/gtest.h>

#include <vector>

#include "cells.h"
#include "effmetrics/report.h"
#include "op_names.h"
#include "watch.h"

namespace em = effmetrics;

namespace {

em::RawCell cell(uint32_t scope, const char* op, em::OpKind kind, int64_t flops, int64_t bytes,
                 em::Phase phase = em::Phase::kForward) {
  em::RawCell c;
  c.scope = scope;
  c.op = op;
  c.kind = kind;
  c.phase = phase;
  em::OpCost cost{kind == em::OpKind::kMatmul ? flops / 2 : 0, flops, bytes, bytes};
  c.counts.add_op(kind, phase, cost);
  return c;
}

// root(0) -> encoder(1) -> encoder.layer(2); head(3); a second path to "encoder.layer" (4)
std::vector<em::ScopeNode> tree() {
  return {{"", 0, 0},
          {"encoder", 0, 1},
          {"encoder.layer", 1, 2},
          {"head", 0, 1},
          {"encoder.layer", 3, 2}};
}

const em::ModuleRow& row(const em::Report& r, const std::string& name) {
  for (const auto& m : r.modules) {
    if (m.name == name) return m;
  }
  ADD_FAILURE() << "no module row " << name;
  return r.modules.front();
}

}  // namespace

TEST(Report, InclusiveSelfAndOrder) {
  std::vector<em::RawCell> cells = {
      cell(1, "aten::add", em::OpKind::kVector, 10, 40),
      cell(2, "aten::mm", em::OpKind::kMatmul, 1000, 400),
      cell(2, "aten::mm", em::OpKind::kMatmul, 2000, 800, em::Phase::kBackward),
      cell(3, "aten::addmm", em::OpKind::kMatmul, 300, 100),
      cell(0, "mylib::thing", em::OpKind::kUnsupported, 0, 16),
  };
  std::vector<int64_t> calls = {0, 1, 2, 1, 0};
  em::Report r = em::Report::build(cells, tree(), calls);

  EXPECT_EQ(r.total.flops, 10 + 1000 + 2000 + 300);
  EXPECT_EQ(r.total.flops_matmul, 3300);
  EXPECT_EQ(r.total.flops_vector, 10);
  EXPECT_EQ(r.total.flops_backward, 2000);
  EXPECT_EQ(r.total.flops_forward, 1310);
  EXPECT_EQ(r.total.bytes_read, 40 + 400 + 800 + 100 + 16);

  ASSERT_EQ(r.modules.size(), 4u);  // the two "encoder.layer" nodes are one row
  EXPECT_EQ(r.modules[0].name, "");
  EXPECT_EQ(r.modules[1].name, "encoder");
  EXPECT_EQ(r.modules[2].name, "encoder.layer");
  EXPECT_EQ(r.modules[3].name, "head");

  EXPECT_EQ(row(r, "encoder").self.flops, 10);
  EXPECT_EQ(row(r, "encoder").total.flops, 10 + 3000);
  EXPECT_EQ(row(r, "encoder.layer").total.flops, 3000);
  EXPECT_EQ(row(r, "encoder.layer").calls, 2);
  EXPECT_EQ(row(r, "encoder.layer").parent, "encoder");
  EXPECT_EQ(row(r, "").total.flops, r.total.flops);
  EXPECT_EQ(row(r, "").self.bytes_read, 16);
  EXPECT_EQ(r.unsupported_ops.at("mylib::thing"), 1);
  EXPECT_EQ(r.ops.size(), cells.size());
}

TEST(Report, ModuleReachedByTwoPathsMergesCounts) {
  std::vector<em::RawCell> cells = {
      cell(2, "aten::mm", em::OpKind::kMatmul, 100, 0),
      cell(4, "aten::mm", em::OpKind::kMatmul, 60, 0),
  };
  em::Report r = em::Report::build(cells, tree(), {0, 1, 2, 1, 3});
  ASSERT_EQ(r.modules.size(), 4u);  // root, encoder, encoder.layer (both paths), head
  int layer_rows = 0;
  for (const auto& m : r.modules) layer_rows += m.name == "encoder.layer";
  EXPECT_EQ(layer_rows, 1);
  EXPECT_EQ(row(r, "encoder.layer").calls, 2 + 3);
  EXPECT_EQ(row(r, "encoder.layer").self.flops, 160);
  EXPECT_EQ(row(r, "encoder.layer").total.flops, 160);
  EXPECT_EQ(row(r, "encoder.layer").self.calls, 2);
  EXPECT_EQ(row(r, "").total.flops, 160);
  EXPECT_EQ(row(r, "head").total.flops, 60);
  EXPECT_EQ(row(r, "encoder").total.flops, 100);
}

TEST(Report, IntensityAndJson) {
  em::Counts c;
  c.add_op(em::OpKind::kMatmul, em::Phase::kForward, em::OpCost{50, 100, 30, 20});
  EXPECT_DOUBLE_EQ(c.intensity(), 2.0);
  EXPECT_EQ(em::Counts{}.intensity(), 0.0);

  std::vector<em::RawCell> cells = {cell(3, "aten::addmm", em::OpKind::kMatmul, 300, 100)};
  em::Report r = em::Report::build(cells, tree(), {0, 0, 0, 1, 0});
  std::string json = r.to_json();
  EXPECT_NE(json.find("\"total\":{\"calls\":1,\"flops\":300,\"macs\":150"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"name\":\"head\""), std::string::npos);
  EXPECT_NE(json.find("\"op\":\"aten::addmm\",\"phase\":\"forward\",\"kind\":\"matmul\""),
            std::string::npos);
  EXPECT_NE(json.find("\"unsupported_ops\":{}"), std::string::npos);
  EXPECT_NE(json.find("\"params_applied\":-1"), std::string::npos);
  // an untimed collective's reason travels with its count ("quoted" as JSON)
  r.comm_untimed = 2;
  r.comm_untimed_why = "a synchronous \"collective\"";
  json = r.to_json();
  EXPECT_NE(json.find("\"comm_untimed\":2,\"comm_untimed_why\":\"a synchronous "
                      "\\\"collective\\\"\""),
            std::string::npos)
      << json;
}

// The threads' cells merged as a report needs them: one per key, the counts of a key summed
// (calls too), ordered by scope node, then op name (not the interned id: "test::zeta" is
// interned first here), then phase, then the unsupported cell after the counted one.
TEST(MergeCells, SumsEachKeyAcrossThreadsInScopeNameAndPhaseOrder) {
  const uint32_t zeta = em::resolve_op("test::merge_zeta", true).second.id;
  const uint32_t alpha = em::resolve_op("test::merge_alpha", true).second.id;
  ASSERT_LT(zeta, alpha);
  auto keyed = [](uint32_t scope, uint32_t op, em::Phase phase, bool unsupported, int64_t flops) {
    em::Cell c;
    c.kind = unsupported ? em::OpKind::kUnsupported : em::OpKind::kVector;
    c.counts.add_op(c.kind, phase, em::OpCost{0, flops, 0, 0});
    return std::make_pair(em::CellKey{scope, op, phase, unsupported}.pack(), c);
  };
  const auto fwd = em::Phase::kForward, bwd = em::Phase::kBackward;
  // Two threads' tables, A's four cells then B's three: B's first has the key of A's first.
  std::vector<std::pair<uint64_t, em::Cell>> cells = {
      keyed(2, zeta, fwd, false, 5),   keyed(1, zeta, bwd, false, 7),
      keyed(1, alpha, fwd, true, 0),   keyed(1, alpha, fwd, false, 3),
      keyed(2, zeta, fwd, false, 11),  keyed(1, zeta, fwd, false, 2),
      keyed(1, alpha, bwd, false, 13),
  };
  const std::vector<em::RawCell> merged = em::merge_cells(cells);
  struct Row {
    uint32_t scope;
    std::string_view op;
    em::Phase phase;
    em::OpKind kind;
    int64_t calls, flops;
  };
  const std::vector<Row> expected = {
      {1, "test::merge_alpha", fwd, em::OpKind::kVector, 1, 3},
      {1, "test::merge_alpha", fwd, em::OpKind::kUnsupported, 1, 0},
      {1, "test::merge_alpha", bwd, em::OpKind::kVector, 1, 13},
      {1, "test::merge_zeta", fwd, em::OpKind::kVector, 1, 2},
      {1, "test::merge_zeta", bwd, em::OpKind::kVector, 1, 7},
      {2, "test::merge_zeta", fwd, em::OpKind::kVector, 2, 5 + 11},
  };
  ASSERT_EQ(merged.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(merged[i].scope, expected[i].scope);
    EXPECT_EQ(merged[i].op, expected[i].op);
    EXPECT_EQ(merged[i].phase, expected[i].phase);
    EXPECT_EQ(merged[i].kind, expected[i].kind);
    EXPECT_EQ(merged[i].counts.calls, expected[i].calls);
    EXPECT_EQ(merged[i].counts.flops, expected[i].flops);
  }
}

// The cell table keyed as the observer keys it: many module scopes (the key's high half) of few
// ops, past its first growth. Each key keeps its own cell, and an unknown key finds none.
TEST(CellTable, ScopesOfOneOpKeepTheirOwnCells) {
  em::CellTable table;
  std::vector<uint64_t> keys;
  for (uint32_t scope = 0; scope < 600; ++scope) {
    for (uint32_t op : {3u, 7u, 11u}) {
      keys.push_back(em::CellKey{scope, op, em::Phase::kForward, false}.pack());
    }
  }
  for (size_t i = 0; i < keys.size(); ++i) table.at(keys[i]).counts.calls = 1 + i;
  ASSERT_EQ(table.size(), keys.size());  // 1,800 cells: the table grows twice on the way
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(table.at(keys[i]).counts.calls, 1 + i);
  int64_t seen = 0;
  table.for_each([&](uint64_t, const em::Cell& c) { seen += c.counts.calls; });
  EXPECT_EQ(seen, static_cast<int64_t>(keys.size() * (keys.size() + 1) / 2));
  EXPECT_EQ(table.at(em::CellKey{601, 3, em::Phase::kForward, false}.pack()).counts.calls, 0);
}

// The watched parameters' table (open addressing, grown as parameters are added): each tensor
// keeps the index of its first add, its uses are counted there, an address never added is not
// watched, and the totals are numel times uses and the numel of those used.
TEST(WatchedParams, FindsEachTensorAmongManyAndCountsItsUses) {
  std::vector<double> memory(1000);  // 1,000 distinct addresses 8 bytes apart
  em::WatchedParams watched;
  std::vector<int64_t> none;
  EXPECT_EQ(watched.count_use(&memory[0], none), -1);  // an empty table
  for (size_t i = 0; i < 600; ++i) watched.add(&memory[i], 10 + i, i % 2 ? -1 : 5);
  watched.add(&memory[7], 99, 99);  // again: the first entry stays
  watched.add(nullptr, 5);          // no tensor: ignored
  ASSERT_EQ(watched.size(), 600u);
  std::vector<int64_t> uses(watched.size(), 0);
  for (size_t i = 0; i < 1000; ++i) {
    const int64_t index = watched.count_use(&memory[i], uses);
    EXPECT_EQ(index, i < 600 ? static_cast<int64_t>(i) : -1) << i;
  }
  EXPECT_EQ(watched.count_use(&memory[3], uses), 3);  // memory[3] used twice
  EXPECT_EQ(watched.count_use(nullptr, uses), -1);
  EXPECT_EQ(watched.numel(7), 17);
  EXPECT_EQ(watched.nonzero(7), -1);
  EXPECT_EQ(watched.nonzero(8), 5);
  int64_t applied = 0, touched = 0;  // numel 10 + i for i < 600, each used once, memory[3] twice
  for (int64_t i = 0; i < 600; ++i) {
    applied += 10 + i;
    touched += 10 + i;
  }
  applied += 13;
  EXPECT_EQ(watched.totals(uses), std::make_pair(applied, touched));
}
