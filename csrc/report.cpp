#include "effmetrics/report.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace effmetrics {

const char* phase_name(Phase phase) { return phase == Phase::kBackward ? "backward" : "forward"; }

void Counts::add(const Counts& o) {
  std::array<int64_t, kNumFields> theirs;
  size_t k = 0;
  fields(o, [&](const char*, int64_t v) { theirs[k++] = v; });
  k = 0;
  fields(*this, [&](const char*, int64_t& v) { v += theirs[k++]; });
}

double Counts::intensity() const {
  int64_t bytes = bytes_read + bytes_written;
  return bytes > 0 ? static_cast<double>(flops) / static_cast<double>(bytes) : 0.0;
}

Report Report::build(const std::vector<RawCell>& cells, const std::vector<ScopeNode>& nodes,
                     const std::vector<int64_t>& calls, const std::vector<int64_t>* scope_time_ns) {
  Report r;
  const size_t n = nodes.size();
  for (size_t k = 1; k < n; ++k) {
    if (nodes[k].parent >= k) {
      throw std::invalid_argument(
          "effmetrics: Report::build needs every scope node after its parent (as scope_nodes() "
          "gives them); node " +
          std::to_string(k) + " has parent " + std::to_string(nodes[k].parent));
    }
  }
  // Each node's own counts, then the inclusive ones summed bottom-up once (children come after
  // their parents): one add per node, not one per cell and ancestor.
  std::vector<Counts> self(n);
  std::vector<char> used(n, 0);  // the node or a descendant has a cell, a call or a time
  used[kRootScope] = 1;
  r.ops.reserve(cells.size());
  for (size_t k = 0; k < calls.size() && k < n; ++k) {
    if (calls[k] > 0) used[k] = 1;
  }
  for (const RawCell& c : cells) {
    const uint32_t node = c.scope < n ? c.scope : kRootScope;
    used[node] = 1;
    self[node].add(c.counts);
    r.ops.push_back(OpRow{nodes[node].name, c.op, c.phase, c.kind, c.counts});
    if (c.kind == OpKind::kUnsupported) r.unsupported_ops[std::string(c.op)] += c.counts.calls;
  }
  if (scope_time_ns) {  // measured scope times replace the sums of the ops' times
    for (size_t k = 0; k < n; ++k) {
      const int64_t t = k < scope_time_ns->size() ? (*scope_time_ns)[k] : 0;
      self[k].time_ns = t;
      if (t != 0) used[k] = 1;
    }
  }
  std::vector<Counts> total = self;
  for (size_t k = n; k-- > 1;) {
    if (!used[k]) continue;
    used[nodes[k].parent] = 1;
    total[nodes[k].parent].add(total[k]);
  }
  r.total = total[kRootScope];
  // Pre-order walk, children in creation (= first execution) order: sibling lists in three
  // flat vectors (no allocation per node).
  constexpr uint32_t kNone = ~uint32_t{0};
  std::vector<uint32_t> first_child(n, kNone), last_child(n, kNone), next_sibling(n, kNone);
  for (uint32_t k = 1; k < n; ++k) {
    if (!used[k]) continue;
    const uint32_t p = nodes[k].parent;
    (last_child[p] == kNone ? first_child[p] : next_sibling[last_child[p]]) = k;
    last_child[p] = k;
  }
  std::unordered_map<std::string_view, size_t> row_of;  // a module reached by two paths: one row
  row_of.reserve(n);
  r.modules.reserve(n);
  auto visit = [&](uint32_t k) {
    auto [it, fresh] = row_of.try_emplace(nodes[k].name, r.modules.size());
    if (fresh) {
      ModuleRow row;
      row.name = nodes[k].name;
      row.parent = k == kRootScope ? std::string_view() : nodes[nodes[k].parent].name;
      row.depth = nodes[k].depth;
      r.modules.push_back(std::move(row));
    }
    ModuleRow& row = r.modules[it->second];
    row.calls += k < calls.size() ? calls[k] : 0;
    row.self.add(self[k]);
    row.total.add(total[k]);
  };
  // Depth first: a node, then its children's subtrees in order (the next sibling of the node
  // or of the nearest ancestor that has one).
  for (uint32_t k = kRootScope; k != kNone;) {
    visit(k);
    if (first_child[k] != kNone) {
      k = first_child[k];
      continue;
    }
    while (k != kRootScope && next_sibling[k] == kNone) k = nodes[k].parent;
    k = k == kRootScope ? kNone : next_sibling[k];
  }
  return r;
}

namespace {

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

// JSON is written with snprintf and std::to_string, not iostreams: an ostream's number facets
// come from the process-wide locale, and a library that carries its own copy of libstdc++ (seen
// on the GPU machine) leaves them unresolvable for us: inserting a number then crashes.
std::string num(int64_t v) { return std::to_string(v); }
std::string num(double v, int precision) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
  return buf;
}

void write_counts(std::string& os, const Counts& c) {
  os += "{";
  Counts::fields(c, [&](const char* name, int64_t v) {
    os += "\"";
    os += name;
    os += "\":" + num(v) + ",";
  });
  os += "\"intensity\":" + num(c.intensity(), 17) + "}";
}

}  // namespace

std::string Report::to_json() const {
  std::string os = "{\"total\":";
  write_counts(os, total);
  os += ",\"modules\":[";
  for (size_t i = 0; i < modules.size(); ++i) {
    const ModuleRow& m = modules[i];
    os += (i ? ",{\"name\":" : "{\"name\":") + quote(m.name) + ",\"parent\":" + quote(m.parent) +
          ",\"depth\":" + num(m.depth) + ",\"calls\":" + num(m.calls) + ",\"self\":";
    write_counts(os, m.self);
    os += ",\"total\":";
    write_counts(os, m.total);
    os += "}";
  }
  os += "],\"ops\":[";
  for (size_t i = 0; i < ops.size(); ++i) {
    const OpRow& o = ops[i];
    os += (i ? ",{\"module\":" : "{\"module\":") + quote(o.module) + ",\"op\":" + quote(o.op) +
          ",\"phase\":" + quote(phase_name(o.phase)) + ",\"kind\":" + quote(kind_name(o.kind)) +
          ",\"counts\":";
    write_counts(os, o.counts);
    os += "}";
  }
  os += "],\"unsupported_ops\":{";
  size_t i = 0;
  for (const auto& [op, n] : unsupported_ops) os += (i++ ? "," : "") + quote(op) + ":" + num(n);
  os += "},\"params_applied\":" + num(params_applied) +
        ",\"params_touched\":" + num(params_touched) + ",\"wall_ns\":" + num(wall_ns) +
        ",\"busy_ns\":" + num(busy_ns) + ",\"exposed_comm_ns\":" + num(exposed_comm_ns) +
        ",\"peer_wait_ns\":" + num(peer_wait_ns) + ",\"comm_untimed\":" + num(comm_untimed) +
        ",\"comm_untimed_why\":" + quote(comm_untimed_why) + ",\"clock\":" + quote(clock) +
        ",\"op_times\":" + (op_times ? "true" : "false") +
        ",\"coverage_ns\":{\"flop_rule\":" + num(coverage_ns[0]) +
        ",\"memory_only\":" + num(coverage_ns[1]) + ",\"unsupported\":" + num(coverage_ns[2]) +
        "},\"effective_basis\":[";
  for (size_t k = 0; k < effective_basis.size(); ++k) {
    if (k) os += ",";
    os += quote(effective_basis[k]);
  }
  os += "],\"rule_errors\":{";
  i = 0;
  for (const auto& [op, e] : rule_errors) {
    if (i++) os += ",";
    os += quote(op) + ":" + quote(e);
  }
  os += "},\"device_steps\":[";
  for (size_t k = 0; k < device_steps.size(); ++k) {
    const DeviceStep& d = device_steps[k];
    os += (k ? ",{\"wall_ns\":" : "{\"wall_ns\":") + num(d.wall_ns) +
          ",\"busy_ns\":" + num(d.busy_ns) + ",\"idle_ns\":" + num(d.idle_ns) + "}";
  }
  os += "]}";
  return os;
}

std::string Report::to_chrome_trace() const {
  // Two processes: host threads (pid 0) and the device timeline (pid 1).
  std::string os =
      "{\"displayTimeUnit\":\"ms\",\"traceEvents\":["
      "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"args\":{\"name\":\"host\"}},"
      "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":" +
      quote("device (" + (clock.empty() ? std::string("none") : clock) + ")") + "}}";
  if (std::any_of(events.begin(), events.end(),
                  [](const TraceEvent& e) { return !e.device && e.thread == kCommThread; })) {
    os +=
        ",{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":" + std::to_string(kCommThread) +
        ",\"args\":{\"name\":\"communication\"}}";
  }
  for (const TraceEvent& e : events) {
    os += ",{\"name\":" + quote(e.name) +
          ",\"cat\":" + quote(e.is_module ? "module" : phase_name(e.phase)) +
          ",\"ph\":\"X\",\"pid\":" + (e.device ? "1" : "0") +
          ",\"tid\":" + std::to_string(e.thread) + ",\"ts\":" + num(e.start_ns / 1e3, 15) +
          ",\"dur\":" + num(e.dur_ns / 1e3, 15) +
          ",\"args\":{\"module\":" + quote(e.is_module ? e.name : e.module);
    if (!e.is_module && !e.device) {
      os += ",\"flops\":" + num(e.flops) + ",\"bytes\":" + num(e.bytes);
    }
    os += "}}";
  }
  os += "]}";
  return os;
}

}  // namespace effmetrics
