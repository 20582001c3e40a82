#include "effmetrics/report.h"

#include <algorithm>
#include <array>
#include <cstdio>
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

void Counts::add_op(OpKind kind, Phase phase, const OpCost& cost) {
  calls += 1;
  flops += cost.flops;
  macs += cost.macs;
  if (kind == OpKind::kMatmul) {
    flops_matmul += cost.flops;
    macs_matmul += cost.macs;
  } else {
    flops_vector += cost.flops;
  }
  (phase == Phase::kBackward ? flops_backward : flops_forward) += cost.flops;
  flops_effective += cost.flops_effective >= 0 ? cost.flops_effective : cost.flops;
  comm_bytes += cost.comm_bytes;
  comm_bus_bytes += cost.comm_bus_bytes;
  comm_ranks += cost.comm_ranks;
  bytes_read += cost.bytes_read > 0 ? cost.bytes_read : 0;
  bytes_written += cost.bytes_written > 0 ? cost.bytes_written : 0;
}

double Counts::intensity() const {
  int64_t bytes = bytes_read + bytes_written;
  return bytes > 0 ? static_cast<double>(flops) / static_cast<double>(bytes) : 0.0;
}

Report Report::build(const std::vector<RawCell>& cells, const std::vector<ScopeNode>& nodes,
                     const std::vector<int64_t>& calls, const std::vector<int64_t>* scope_time_ns) {
  Report r;
  const size_t n = nodes.size();
  std::vector<Counts> self(n), total(n);
  std::vector<char> used(n, 0);
  auto mark = [&](uint32_t node) {
    for (uint32_t k = node;; k = nodes[k].parent) {
      used[k] = 1;
      if (k == kRootScope) break;
    }
  };
  mark(kRootScope);
  r.ops.reserve(cells.size());
  for (size_t k = 0; k < calls.size() && k < n; ++k) {
    if (calls[k] > 0) mark(static_cast<uint32_t>(k));
  }
  for (const RawCell& c : cells) {
    uint32_t node = c.scope < n ? c.scope : kRootScope;
    mark(node);
    self[node].add(c.counts);
    for (uint32_t k = node;; k = nodes[k].parent) {
      total[k].add(c.counts);
      if (k == kRootScope) break;
    }
    r.total.add(c.counts);
    r.ops.push_back(OpRow{nodes[node].name, c.op, c.phase, c.kind, c.counts});
    if (c.kind == OpKind::kUnsupported) r.unsupported_ops[c.op] += c.counts.calls;
  }
  if (scope_time_ns) {
    r.total.time_ns = 0;
    for (size_t k = 0; k < n; ++k) self[k].time_ns = total[k].time_ns = 0;
    for (size_t k = 0; k < n && k < scope_time_ns->size(); ++k) {
      const int64_t t = (*scope_time_ns)[k];
      if (t == 0) continue;
      mark(static_cast<uint32_t>(k));
      self[k].time_ns = t;
      for (uint32_t a = static_cast<uint32_t>(k);; a = nodes[a].parent) {
        total[a].time_ns += t;
        if (a == kRootScope) break;
      }
      r.total.time_ns += t;
    }
  }
  // Pre-order walk, children in creation (= first execution) order.
  std::vector<std::vector<uint32_t>> children(n);
  for (uint32_t k = 1; k < n; ++k) {
    if (used[k]) children[nodes[k].parent].push_back(k);
  }
  std::unordered_map<std::string, size_t> row_of;  // a module reached by two paths: one row
  auto visit = [&](uint32_t k) {
    auto it = row_of.find(nodes[k].name);
    if (it == row_of.end()) {
      row_of.emplace(nodes[k].name, r.modules.size());
      ModuleRow row;
      row.name = nodes[k].name;
      row.parent = k == kRootScope ? "" : nodes[nodes[k].parent].name;
      row.depth = nodes[k].depth;
      r.modules.push_back(row);
      it = row_of.find(nodes[k].name);
    }
    ModuleRow& row = r.modules[it->second];
    row.calls += k < calls.size() ? calls[k] : 0;
    row.self.add(self[k]);
    row.total.add(total[k]);
  };
  std::vector<uint32_t> stack{kRootScope};
  while (!stack.empty()) {
    const uint32_t k = stack.back();
    stack.pop_back();
    visit(k);
    stack.insert(stack.end(), children[k].rbegin(), children[k].rend());
  }
  return r;
}

namespace {

std::string quote(const std::string& s) {
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
