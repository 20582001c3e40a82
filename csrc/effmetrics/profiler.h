// effmetrics::Profiler: observes every ATen op between start() and stop() through RecordFunction
// callbacks and counts FLOPs, MACs and bytes per op and per module scope.
//
//   effmetrics::Profiler prof;                 // starts observing this thread (and the
//   {                                          // autograd threads its backward runs on)
//     effmetrics::ScopeGuard g("encoder");
//     auto y = model->forward(x);
//   }
//   effmetrics::Report r = prof.stop();
//   std::cout << r.to_json();
//
// Counting rule: each FLOP is counted once. aten::linear has no rule and counts through its
// aten::addmm; an op with a FLOP rule accounts for everything below it (owns_children in
// rules.h), so a backend's internal copies are not counted twice; memory/view rules count at the
// innermost op that has one. Bytes are counted at the ops that count, and at leaf ops without a
// rule, which are also listed as unsupported. An op without a rule that has a backend kernel
// of its own (not a composite) is listed too, whatever the ops inside it counted.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "effmetrics/report.h"
#include "effmetrics/timing.h"

namespace effmetrics {

struct ProfilerOptions {
  // false: observe the starting thread and the threads its autograd graph runs on (thread-local
  // callback). true: observe every thread in the process (global callback).
  bool all_threads = false;
  // Measure the time of each op (Counts::time_ns) and the busy time of the threads
  // (Report::busy_ns, wall_ns). Two clock reads per op.
  bool time = false;
  // Also keep every timed op and module span (Report::events, to_chrome_trace). Implies time.
  bool trace = false;
  // Emit an NVTX range per op ("aten::addmm") and per module scope while running.
  bool nvtx = false;
  bool nvtx_ops = false;  // the per-op ranges (module ranges come with nvtx)
  // Time on a device's own timeline instead of host clocks: "" (host clocks) or "cuda[:i]".
  // Marks (CUDA events on the current stream) go around each outermost op that touches the
  // device (a tensor or device argument on it): their device spans give each module's time
  // (ModuleRow::self.time_ns) and, per step, the device's busy and idle time
  // (device_steps(), Report::device_steps; a step ends at each snapshot()). Spans are read once the
  // device has passed them: snapshot() never waits, stop() does.
  std::string device;
  // With `device`: also mark every counted op, for per-op device times (OpRow time_ns).
  bool time_ops = false;
  // flops_effective from values: count the True elements of boolean attention masks, and use
  // the nonzero counts given to watch(). Causal masks (shapes only) are always discounted.
  bool effective = false;
  // A timeline to use instead of make_device_timeline(device) (tests: make_host_timeline()).
  std::shared_ptr<DeviceTimeline> timeline;

  // The options as they take effect (the one place these rules live): trace and time_ops imply
  // time, nvtx_ops implies nvtx; a device or timeline applies only when timed, and time_ops only
  // on a device timeline.
  ProfilerOptions resolved() const;
  // Timed on a device's timeline (resolved options: time with a device or timeline).
  bool device_timeline() const { return time && (timeline || !device.empty()); }
};

class Session;

// A counting trace ran one of torch.compile's captured graphs op by op on this thread (the
// Python side's compiled.py): the compiled region around it was counted. A compiled region in
// which no graph was counted this way ran fused kernels that no observer sees; it is listed in
// unsupported_ops under its name ("Torch-Compiled Region: 0/0"), never a silent zero.
void note_counted_graph();

// The share of attention scores kept (kept of pairs) for the matmul-class ops this thread runs
// from now on that no attention op of their own describes (causal SDPA, boolean masks): their
// flops_effective is scaled by kept/pairs (Report::effective_basis "block_mask"); pairs = 0
// clears it. The Python side sets it around a flex_attention call from its BlockMask's kept
// blocks, forward and backward each on the thread that runs them. Returns the previous share.
std::pair<int64_t, int64_t> set_attention_share(int64_t kept, int64_t pairs);

// The floor of the approach, for bench/overhead.py: a thread-local RecordFunction callback that
// asks for inputs and outputs, as the Profiler's does, and does nothing with them.
class EmptyObserver {
 public:
  EmptyObserver();  // registered on this thread
  ~EmptyObserver();
  EmptyObserver(const EmptyObserver&) = delete;
  EmptyObserver& operator=(const EmptyObserver&) = delete;

 private:
  uint64_t handle_;
};

class Profiler {
 public:
  // Up to kMaxProfilers may be active at once (nested or on other threads); each counts alone.
  static constexpr int kMaxProfilers = 8;

  // Throws std::invalid_argument, with the fix, when options.device is not available.
  explicit Profiler(ProfilerOptions options = {}, bool start_now = true);
  ~Profiler();  // stops (and discards) if still running
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  void start();
  // Stops observing and returns everything counted since start().
  Report stop();
  // Everything counted since start(), while observing goes on (Counter takes one per step and
  // differences them). Call it between steps, when no profiled op runs on another thread.
  Report snapshot();
  // The totals of snapshot() (counts summed over every op so far, and busy_ns) without building
  // rows: cheap enough for every step of a training loop. Between steps, like snapshot().
  struct Totals {
    Counts counts;
    int64_t busy_ns = 0;
    int64_t exposed_comm_ns = 0;  // Report::exposed_comm_ns, peer_wait_ns so far
    int64_t peer_wait_ns = 0;
  };
  Totals totals();
  // On a device timeline: closes the current step and opens the next (snapshot() does this too);
  // without one, nothing.
  void mark_step();
  // detach() removes the RecordFunction callbacks, so ops run unobserved at full speed while the
  // counts so far are kept; attach() adds them back. Counter(count="auto" or N) detaches in the
  // steps it does not count. An op already running when detach() is called still ends observed.
  // A thread-local profiler detaches and attaches on the thread that started it.
  void detach();
  void attach();
  bool attached() const { return attached_; }
  bool running() const;
  const ProfilerOptions& options() const { return options_; }  // resolved
  // How times are measured: "" (not timed), "steady_clock" (host) or the device timeline's
  // clock ("cuda_event").
  std::string clock() const;
  // With a device timeline: the device steps resolved so far (every closed step when wait),
  // from step `first` on (a training loop asks for the new ones only).
  std::vector<DeviceStep> device_steps(bool wait, size_t first = 0);

  // While paused (pause() calls outnumber resume() calls), ops are not observed: a compiler
  // tracing the model inside a profiled call (torch.compile) is not the model's work.
  void pause();
  void resume();

  // Ops that run outside autograd nodes are forward unless told otherwise: profile(backward=True)
  // sets kBackward around loss.backward() so the gradient seed counts as backward too.
  void set_phase(Phase phase);

  // Watch a parameter by its TensorImpl address: the report then gives params_applied (numel
  // times each use as a direct input of a top-level forward op) and params_touched (numel of
  // the distinct watched tensors used). Call before start(). nonzero: its nonzero elements,
  // for a weight (2-D or more) whose zeros flops_effective discounts (options().effective); -1:
  // unknown (not discounted).
  void watch(const void* tensor_impl, int64_t numel, int64_t nonzero = -1);

 private:
  std::unique_ptr<Session> session_;
  ProfilerOptions options_;
  // This thread's (or every thread's) callbacks: ops, autograd nodes, named regions
  // (add_callbacks).
  std::array<uint64_t, 3> callback_handles_{};
  bool attached_ = false;
  std::thread::id owner_;
  std::vector<int64_t> calls_at_start_;  // module calls on the owner thread at start()
  struct Watched {
    const void* impl;
    int64_t numel, nonzero;
  };
  std::vector<Watched> pending_watch_;
  std::vector<ScopeEvent> scope_events_;      // module enter/exit on the owner thread (trace)
  std::shared_ptr<DeviceTimeline> timeline_;  // options_.timeline, or made from options_.device

  void add_callbacks();  // this session's slot's callbacks, global or on this thread
  void remove_callbacks();
  void check_owner(const char* what) const;
};

}  // namespace effmetrics
