// The timeline of a traced profile (ProfilerOptions::trace): op events as the hot path records
// them, assembled into the report's named TraceEvents with the module spans.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "effmetrics/report.h"
#include "effmetrics/scope.h"

namespace effmetrics {

// One timed op; its name is resolved when the report is built.
struct RawEvent {
  uint32_t op;
  uint32_t scope;
  Phase phase;
  int64_t start_ns, dur_ns, flops, bytes;
};

constexpr uint64_t kDeviceTrack = ~0ull;  // the "thread" of events timed on the device

// events: (thread id or kDeviceTrack, event), times on the steady clock. Module spans come from
// the enter/exit pairs in scope_events, on module_thread. Times become relative to start_ns;
// the result is sorted by start.
std::vector<TraceEvent> assemble_trace(const std::vector<std::pair<uint64_t, RawEvent>>& events,
                                       const std::vector<ScopeEvent>& scope_events,
                                       const std::vector<ScopeNode>& nodes, int64_t start_ns,
                                       uint64_t module_thread);

}  // namespace effmetrics
