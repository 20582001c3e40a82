#include "trace.h"

#include <algorithm>
#include <string>

#include "op_names.h"

namespace effmetrics {

std::vector<TraceEvent> assemble_trace(const std::vector<std::pair<uint64_t, RawEvent>>& events,
                                       const std::vector<ScopeEvent>& scope_events,
                                       const std::vector<ScopeNode>& nodes, int64_t start_ns,
                                       uint64_t module_thread) {
  auto node_name = [&](uint32_t node) {
    return node < nodes.size() ? nodes[node].name : std::string_view();
  };
  std::vector<uint32_t> ops;  // distinct op ids, ascending: one name lookup each
  for (const auto& te : events) ops.push_back(te.second.op);
  std::sort(ops.begin(), ops.end());
  ops.erase(std::unique(ops.begin(), ops.end()), ops.end());
  const std::vector<std::string_view> names = op_names(ops);
  std::vector<TraceEvent> out;
  out.reserve(events.size() + scope_events.size() / 2);
  for (const auto& [thread, e] : events) {
    TraceEvent t;
    t.device = thread == kDeviceTrack;
    t.name = names[std::lower_bound(ops.begin(), ops.end(), e.op) - ops.begin()];
    t.module = node_name(e.scope);
    t.phase = e.phase;
    t.thread = t.device ? 0 : thread;
    t.start_ns = e.start_ns - start_ns;
    t.dur_ns = e.dur_ns;
    t.flops = e.flops;
    t.bytes = e.bytes;
    out.push_back(std::move(t));
  }
  std::vector<const ScopeEvent*> open;
  for (const ScopeEvent& e : scope_events) {
    if (e.enter) {
      open.push_back(&e);
    } else if (!open.empty()) {
      TraceEvent t;
      t.name = node_name(open.back()->node);
      t.is_module = true;
      t.thread = module_thread;
      t.start_ns = open.back()->time_ns - start_ns;
      t.dur_ns = e.time_ns - open.back()->time_ns;
      out.push_back(std::move(t));
      open.pop_back();
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const TraceEvent& a, const TraceEvent& b) {
    return a.start_ns < b.start_ns;
  });
  return out;
}

}  // namespace effmetrics
