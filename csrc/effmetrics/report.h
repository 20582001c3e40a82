// The result of a profiled region: totals, per-op and per-module rows, unsupported ops.
// Plain data; aggregation and JSON live here so C++ and Python users get the same numbers.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "effmetrics/rules.h"
#include "effmetrics/scope.h"

namespace effmetrics {

enum class Phase : uint8_t { kForward = 0, kBackward = 1 };
const char* phase_name(Phase phase);

struct Counts {
  int64_t calls = 0;
  int64_t flops = 0;
  int64_t macs = 0;
  int64_t flops_matmul = 0;
  int64_t macs_matmul = 0;
  int64_t flops_vector = 0;
  int64_t flops_forward = 0;
  int64_t flops_backward = 0;
  // The work left once known-unnecessary work is removed: masked attention scores, products
  // with zero weights (README "flops_effective"); == flops where nothing is known.
  int64_t flops_effective = 0;
  int64_t bytes_read = 0;
  int64_t bytes_written = 0;
  int64_t time_ns = 0;  // measured time inside the ops (profile(time=True)); 0 otherwise
  // Collectives (OpKind::kCollective): data size (nccl-tests' S) and bus bytes on this rank, the
  // sum of the calls' group sizes (a row's group size is comm_ranks / calls), and, when timed,
  // the time the backend's work took (a gloo work from start to finish on its thread; a p2p
  // send/recv from posting it to its wait's end).
  int64_t comm_bytes = 0;
  int64_t comm_bus_bytes = 0;
  int64_t comm_ranks = 0;
  int64_t comm_time_ns = 0;

  // Every field with its name, in one order: JSON, the Python columns and add() use it.
  template <typename Self, typename F>
  static void fields(Self& c, F&& f) {
    f("calls", c.calls);
    f("flops", c.flops);
    f("macs", c.macs);
    f("flops_matmul", c.flops_matmul);
    f("macs_matmul", c.macs_matmul);
    f("flops_vector", c.flops_vector);
    f("flops_forward", c.flops_forward);
    f("flops_backward", c.flops_backward);
    f("flops_effective", c.flops_effective);
    f("bytes_read", c.bytes_read);
    f("bytes_written", c.bytes_written);
    f("time_ns", c.time_ns);
    f("comm_bytes", c.comm_bytes);
    f("comm_bus_bytes", c.comm_bus_bytes);
    f("comm_ranks", c.comm_ranks);
    f("comm_time_ns", c.comm_time_ns);
  }
  static constexpr int kNumFields = 16;

  void add(const Counts& o);
  void add_op(OpKind kind, Phase phase, const OpCost& cost);  // one call (inline: every op's)
  // FLOPs per byte moved (0 when nothing moved).
  double intensity() const;
};

inline void Counts::add_op(OpKind kind, Phase phase, const OpCost& cost) {
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

// One (module, op, phase) cell. Rows name modules and ops by views of interned names
// (ScopeNode::name, RawCell::op), which live as long as the process: a report's rows allocate
// no string, and copies of a report share the names.
struct OpRow {
  std::string_view module;  // qualified name of the innermost module scope ("" = root)
  std::string_view op;      // "aten::addmm"
  Phase phase = Phase::kForward;
  OpKind kind = OpKind::kUnsupported;
  Counts counts;
};

struct ModuleRow {
  std::string_view name;    // "" for the root
  std::string_view parent;  // parent module's name ("" for top-level modules and the root)
  int depth = 0;
  int64_t calls = 0;  // times the module ran (on the profiler's thread)
  Counts self;        // ops attributed directly to this module
  Counts total;       // inclusive of every submodule
};

// Raw cell as the observer accumulates it (scope node and interned op name).
struct RawCell {
  uint32_t scope = kRootScope;
  std::string_view op;  // an interned op name (or a literal): outlives the cell
  Phase phase = Phase::kForward;
  OpKind kind = OpKind::kUnsupported;
  Counts counts;
};

// The host "thread" of the collectives' backend works in a trace (their time, as CommTracker
// measures it: gloo's worker thread, a p2p work from posting to its wait's end).
constexpr uint64_t kCommThread = 0x7fffffff;

// One timed op (profile(trace=True)): times in ns since the profiler started.
struct TraceEvent {
  std::string name;    // op name, or module name for a module span
  std::string module;  // innermost module scope of an op
  Phase phase = Phase::kForward;
  bool is_module = false;
  bool device = false;  // timed on the device timeline (start: device time since its start mark)
  uint64_t thread = 0;
  int64_t start_ns = 0;
  int64_t dur_ns = 0;
  int64_t flops = 0;
  int64_t bytes = 0;
};

// One step on a device timeline (ProfilerOptions::device): from the mark closing the previous
// step (or start()) to the mark at the end of this one, as the device saw it.
struct DeviceStep {
  int64_t wall_ns = 0;  // device time between the step's boundary marks
  int64_t busy_ns = 0;  // covered by the spans of its ops
  int64_t idle_ns = 0;  // wall - busy: the device waiting on the host
};

struct Report {
  Counts total;
  std::vector<OpRow> ops;
  std::vector<ModuleRow> modules;                  // tree pre-order, root first
  std::map<std::string, int64_t> unsupported_ops;  // op -> calls
  // Watched parameters (see Profiler::watch): -1 when none were watched.
  int64_t params_applied = -1;
  int64_t params_touched = -1;
  // Timing (ProfilerOptions::time): wall time of the profiled region and the time its threads
  // spent inside top-level ops (busy); the rest is host-side idle time. 0 when not timed.
  int64_t wall_ns = 0;
  int64_t busy_ns = 0;
  // Timed: communication time not overlapped with compute (a collective's or p2p work in flight
  // while no other op runs on any observed thread); the part of it with a p2p recv in flight (a
  // stage waiting for its peer).
  // -1 (unknown) once a collective ran on a device: its overlap happens on the device.
  int64_t exposed_comm_ns = 0;
  int64_t peer_wait_ns = 0;
  // Device collectives whose time could not be read (a backend without timing): not in
  // comm_time_ns.
  int64_t comm_untimed = 0;
  std::string comm_untimed_why;    // the first one's reason
  std::vector<TraceEvent> events;  // ProfilerOptions::trace: ops and module spans, by start
  int64_t start_ns = 0;            // the steady clock at start(): where event times count from
  // How times were measured: "" (not timed), "steady_clock" (host), "cuda_event" (device).
  // With a device clock wall_ns/busy_ns are the device's (sums over device_steps), module
  // times are device spans, and op times exist only with ProfilerOptions::time_ops.
  std::string clock;
  bool op_times = false;                 // OpRow/Counts time_ns were measured per op
  std::vector<DeviceStep> device_steps;  // every step (Profiler::stop(); empty in snapshots)
  // Coverage (host clocks only): measured time of the counted ops, each nanosecond once (an op's
  // own time less that of the counted ops below it), split by how the op was counted: a FLOP
  // rule (matmul or vector), memory only (memory and view rules), unsupported.
  std::array<int64_t, 3> coverage_ns{};
  // What flops_effective could use: "causal", "mask", "zeros", "block_mask" (a share set with
  // set_attention_share: flex_attention's block masks), and what it could not:
  // "mask:no-data" (a boolean mask without values, e.g. on meta), "mask:not-requested"
  // (boolean masks are read only with ProfilerOptions::effective).
  std::vector<std::string> effective_basis;
  // Registered rules that threw: op -> the first error (the op is listed as unsupported).
  std::map<std::string, std::string> rule_errors;

  // Builds rows from raw cells; `calls[node]` = times each scope node was entered.
  // scope_time_ns (optional, per node): measured self time of each scope, replacing the sum of
  // its ops' times in the module rows (device timelines time modules, not every op).
  static Report build(const std::vector<RawCell>& cells, const std::vector<ScopeNode>& nodes,
                      const std::vector<int64_t>& calls,
                      const std::vector<int64_t>* scope_time_ns = nullptr);
  std::string to_json() const;
  // Chrome trace JSON ("X" events, microseconds): opens in Perfetto and chrome://tracing.
  std::string to_chrome_trace() const;
};

}  // namespace effmetrics
