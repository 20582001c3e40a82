// Steps on a device timeline (ProfilerOptions::device): a mark at each step boundary and marks
// around the ops in between. A step is read once the device has passed its end mark: its busy
// and idle time, the device self time of each module scope, per-op times, device trace events.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "cells.h"
#include "effmetrics/report.h"
#include "effmetrics/timing.h"
#include "trace.h"

namespace effmetrics {

// Marks around one op, read once the device has passed them.
struct DeviceSpan {
  uint32_t mark0, mark1;
  uint32_t step;
  uint32_t scope;
  uint32_t op;
  Phase phase;
  bool outer;             // the outermost op on the device: its span is busy time
  bool has_cell = false;  // time_ops: the span's time goes to this cell
  // A collective run on this stream (a synchronous NCCL collective returns no work): the span's
  // time is its comm_time, in cell_key.
  bool comm = false;
  uint64_t cell_key = 0;
};

class DeviceSteps {
 public:
  DeviceSteps(std::shared_ptr<DeviceTimeline> timeline, bool trace, int64_t start_ns)
      : tl_(std::move(timeline)), trace_(trace), start_ns_(start_ns) {}

  DeviceTimeline& timeline() const { return *tl_; }
  // The step ops are marked in now; profiler start() opens the first, each snapshot() closes one
  // and opens the next, so the profiler's own work between them is in no step.
  uint32_t current_step() const { return step_.load(std::memory_order_relaxed); }
  void open_step();
  void close_step();

  // One thread's spans not yet read (in step order; read ones are erased) and its cells.
  struct ThreadSpans {
    std::vector<DeviceSpan>* spans;
    CellTable* cells;
  };
  // Reads every closed step the device has passed, waiting for the device when asked. The
  // caller holds the lock that guards the threads' spans and cells.
  void resolve(bool wait, const std::vector<ThreadSpans>& threads);

  std::vector<DeviceStep> steps(size_t first) const;  // resolved steps from index first on
  const std::vector<DeviceStep>& all_steps() const { return steps_; }
  int64_t wall_ns() const { return wall_ns_; }  // sums over the resolved steps
  int64_t busy_ns() const { return busy_ns_; }
  const std::vector<int64_t>& scope_time_ns() const { return scope_time_; }  // self, per node
  const std::vector<RawEvent>& events() const { return events_; }            // trace

 private:
  const std::shared_ptr<DeviceTimeline> tl_;
  const bool trace_;
  const int64_t start_ns_;
  std::atomic<uint32_t> step_{0};  // the open step's index
  uint32_t step_begin_ = 0;
  uint32_t origin_ = 0;  // the first step's begin mark: time zero of device trace events
  std::vector<std::pair<uint32_t, uint32_t>> closed_;  // closed steps' (begin, end) marks
  std::vector<DeviceStep> steps_;                      // resolved steps, in order
  int64_t wall_ns_ = 0, busy_ns_ = 0;
  std::vector<int64_t> scope_time_;
  std::vector<RawEvent> events_;
};

}  // namespace effmetrics
