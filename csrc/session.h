// A running Profiler's state and its hot path: what the RecordFunction callbacks do with each op.
//
// Hot path: no lock, no allocation in steady state. Each (profiler, thread) pair owns a
// ThreadBuffer with its op stack (frames are reused), an op-name cache and the accumulated
// cells; buffers are pooled across profilers. on_start/on_end read as a few named steps:
// capture (capture.h), attribution (attribution.h), costs (rules.h), aggregation (cells.h),
// and the clocks (host, or the device timeline's steps: device_steps.h).
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "attribution.h"
#include "cells.h"
#include "comm.h"
#include "device_steps.h"
#include "effmetrics/profiler.h"
#include "op_names.h"
#include "trace.h"
#include "watch.h"

namespace at {
struct RecordFunction;
}

namespace effmetrics {

// What the callbacks know of one op in flight; reset as a whole when a frame is reused.
struct FrameState {
  // The RecordFunction's address (alive from its start callback to its end one): pairs the end
  // callback with its start. Not RecordFunction::handle(), which is 0 unless torch's own
  // profiler numbers the records.
  uint64_t handle = 0;
  const OpInfo* info = nullptr;
  int64_t t0 = 0;  // steady_clock ns at start (host timing only)
  uint32_t scope = kRootScope;
  Phase phase = Phase::kForward;
  bool absorbed = false;       // not counted here: inside an op with a FLOP rule, or started paused
  bool under_rule = false;     // some ancestor has a (memory or view) rule
  bool in_op = false;          // some ancestor is a dispatcher op (not only named regions)
  bool has_child = false;      // an op ran inside this one
  bool child_counted = false;  // a descendant with a rule counted
  bool flops_below = false;    // a descendant with a FLOP rule counted
  bool nvtx = false;           // an NVTX range is open for this op
  bool computing = false;      // a top-level op other than a collective (comm exposure clock)
  bool device_comm = false;    // a timed collective on device tensors: its work has its time
  // Muting (Session::mute): this session's callback is off on this thread until the op ends, or
  // the op is observed to learn how many records nest in it (absorbed0: the thread's absorbed
  // count at its start).
  bool muted = false;
  bool observed = false;
  uint32_t absorbed0 = 0;
  // Device timeline:
  bool on_device = false;   // a tensor or device argument on the timeline's device
  bool in_span = false;     // an ancestor holds an outer span
  bool outer_span = false;  // the outermost op on the device: its span is busy time
  bool op_span = false;     // time_ops: marked for its own time
  uint32_t mark0 = 0;
  uint32_t step = 0;
  uint64_t counted_graphs = 0;  // compiled region: graphs counted on the thread at its start
  // flops_effective of the matmul-class ops in this frame's subtree: attention score pairs kept
  // of all (causal or boolean mask; 0 pairs: no mask known) and the weight's nonzero elements
  // of all (0: none known). Inherited by child frames.
  int64_t attn_kept = 0, attn_pairs = 0;
  int64_t w_nonzero = 0, w_numel = 0;
  // Coverage: time of the counted ops below (each counted once), and the class of this op's
  // cell (Report::coverage_ns index; -1: no cell).
  int64_t counted_below_ns = 0;
  int8_t covered = -1;
};

struct Frame : FrameState {
  OpCall call;  // keeps its capacity across reuse
  void reset(uint64_t handle) {
    // Copied from a constant: assigning FrameState{} builds a temporary (rep stos), then reads
    // it back across the stores' boundaries, a stall on every op.
    static const FrameState kFresh{};
    static_cast<FrameState&>(*this) = kFresh;
    this->handle = handle;
    call.clear();
  }
  // A frame nothing is counted in (an absorbed op: most ops nest in one with a FLOP rule): only
  // what on_end and its children read of it is set; the rest stays stale, unread.
  void absorb(uint64_t handle) {
    this->handle = handle;
    absorbed = true;
    computing = false;
  }
};

struct ThreadBuffer {
  uint64_t rf_thread_id = 0;  // at::RecordFunction::currentThreadId() of the owning thread
  const std::vector<uint32_t>* scopes = nullptr;  // the owning thread's current_scope_stack()
  std::vector<Frame> stack;
  size_t depth = 0;
  uint32_t absorbed = 0;  // absorbed records so far (wraps; differences only)
  std::unordered_map<std::string_view, OpInfo> op_cache;
  // The op_cache entry last found for a name address, one slot per value of the address's top
  // kNameSlotBits hash bits. An op's records carry its schema's name, one address per op, so a hit
  // costs a pointer compare and a strcmp instead of hashing the name; the strcmp because an address
  // can come back with another name (a record's own string, a freed schema's storage).
  struct NameSlot {
    const char* name = nullptr;
    const OpInfo* info = nullptr;
  };
  static constexpr int kNameSlotBits = 7;
  std::array<NameSlot, size_t{1} << kNameSlotBits> name_slots{};
  CellTable cells;
  SeqScopes seq_scopes;                   // forward sequence numbers -> scopes
  uint32_t last_node_scope = kRootScope;  // scope of the last autograd node started here
  std::vector<int64_t> watched_uses;      // one slot per watched parameter
  int64_t busy_ns = 0;                    // time inside top-level ops (host timing only)
  std::vector<RawEvent> events;           // timed ops (trace only)
  std::vector<DeviceSpan> spans;          // device timeline: spans not yet read, in step order
  uint64_t rules_version = ~uint64_t{0};  // of the rules in op_cache (rules_version())
  // Forward ops whose attention scores were partly masked: seqNr -> (kept, pairs), for their
  // backward nodes (few: attention ops only).
  std::unordered_map<int64_t, std::pair<int64_t, int64_t>> seq_attention;
  std::array<int64_t, 3> coverage_ns{};   // Report::coverage_ns, this thread's share
  std::vector<const void*> nvtx_regions;  // named regions with an NVTX range open, innermost last
  // Views of weights with known zeros made by top-level ops (W.t() in x @ W.t()): by the view's
  // TensorImpl, the weight's (nonzero, numel) and the view's storage, checked on use (an address
  // reused by another tensor has another storage, or is another view of the same weight).
  struct WeightView {
    int64_t nonzero, numel;
    const void* storage;
  };
  std::unordered_map<const void*, WeightView> weight_views;

  Frame* top() { return depth ? &stack[depth - 1] : nullptr; }
  uint32_t current_scope() const { return scopes->empty() ? kRootScope : scopes->back(); }
  // Pushes a frame for a starting op; frames and their OpCall buffers are reused.
  // Inline: every op's start callback runs it, most of them absorbed.
  [[gnu::always_inline]] Frame& push(uint64_t handle, bool absorbed = false) {
    if (depth == stack.size()) stack.emplace_back();  // may move frames: callers re-read top()
    Frame& f = stack[depth++];
    if (absorbed) {
      f.absorb(handle);
      ++this->absorbed;
    } else {
      f.reset(handle);
    }
    return f;
  }
  // What we know of the op's name (cached per thread; resolve_op locks).
  [[gnu::always_inline]] const OpInfo& info(const at::RecordFunction& fn);
  // A slot's miss: the op cache (resolving the name the first time), then the slot.
  const OpInfo& info_lookup(const at::RecordFunction& fn, const char* name, NameSlot& slot);
  void clear();  // back to a fresh state, capacities kept (pooling)
};

class Session {
 public:
  // options: ProfilerOptions::resolved(); timeline: non-null for a device timeline.
  Session(int slot, const ProfilerOptions& options, std::shared_ptr<DeviceTimeline> timeline);
  ~Session();

  int slot() const { return slot_; }
  uint64_t generation() const { return generation_; }
  // The buffer of the first thread that registered, found without a thread-local lookup (the
  // extension's thread-locals cost a __tls_get_addr call each): rf_thread is the record's
  // RecordFunction::threadId(), unique per thread and never reused; self is pthread_self(),
  // checked too because an end callback may run on another thread than its start (async).
  ThreadBuffer* first_buffer(uint64_t rf_thread, pthread_t self) const {
    return rf_thread == first_rf_thread_.load(std::memory_order_acquire) &&
                   pthread_equal(self, first_pthread_)
               ? first_buffer_
               : nullptr;
  }
  bool has_timeline() const { return device_ != nullptr; }
  // Step boundaries on the device timeline (start(), snapshot(), stop()).
  void open_step() { device_->open_step(); }
  void close_step() { device_->close_step(); }
  // Reads the device steps it has passed (waiting for it if asked); those from index first on.
  std::vector<DeviceStep> device_steps(bool wait, size_t first);

  ThreadBuffer* register_thread();
  void watch(const void* tensor_impl, int64_t numel, int64_t nonzero) {
    watched_.add(tensor_impl, numel, nonzero);
  }
  // The session's RecordFunction callback for ops when it is thread-local (0: global, or
  // detached): the one mute() turns off.
  void set_own_callback(uint64_t handle) { own_callback_.store(handle); }
  void set_phase(Phase phase) { forced_phase_.store(static_cast<uint8_t>(phase)); }
  void pause() { paused_.fetch_add(1); }
  void resume() { paused_.fetch_sub(1); }

  void on_start(const at::RecordFunction& fn, ThreadBuffer& tb);
  void on_end(const at::RecordFunction& fn, ThreadBuffer& tb);

  // Every thread's cells summed into one Counts, the host busy time and the exposed
  // communication (Profiler::totals()).
  void totals(Counts* counts, int64_t* busy_ns, CommTracker::Totals* comm);
  // Sums every thread's cells into a report; calls: module calls per scope node; final: the
  // profiler stops (wait for the device, keep every device step).
  Report collect(const std::vector<int64_t>& calls, const std::vector<ScopeEvent>& scope_events,
                 bool final);

 private:
  // on_start, in order:
  void attribute(const at::RecordFunction& fn, Frame* parent, ThreadBuffer& tb, Frame& f);
  bool needs_inputs(const Frame& f) const;
  void capture(const at::RecordFunction& fn, Frame& f, bool counts_uses, ThreadBuffer& tb);
  void attention_scores(const at::RecordFunction& fn, Frame& f);
  void mute(Frame& f, const ThreadBuffer& tb);
  void open_span(Frame& f);
  // on_end, in order:
  void unmute(Frame& f, const ThreadBuffer& tb);
  int64_t close_span(const Frame& f, ThreadBuffer& tb);  // f has a span: its index
  bool count(const at::RecordFunction& fn, Frame& f, ThreadBuffer& tb, int64_t dur_ns,
             int64_t span);
  void weight_view(const at::RecordFunction& fn, const Frame& f, ThreadBuffer& tb);
  [[gnu::always_inline]] void add_cell(ThreadBuffer& tb, Frame& f, OpKind kind, const OpCost& cost,
                                       int64_t dur_ns, int64_t span);
  void apply_effective(const at::RecordFunction& fn, const Frame& f, ThreadBuffer& tb,
                       OpCost& cost);
  void rule_error(const Frame& f, const char* what);

  // User-scope records: named regions (NVTX) and backends' work records (not nested in the op
  // stack: a gloo work starts and ends on gloo's thread, a recv ends at its wait).
  void on_user_scope(const at::RecordFunction& fn, ThreadBuffer& tb, bool start);
  void on_comm_work(const at::RecordFunction& fn, const OpInfo& info, bool start);
  void compute_ends(const Frame& f) {
    if (f.computing) comm_.compute(-1);
  }

  uint32_t backward_scope(uint64_t fwd_thread, int64_t seq);
  std::pair<int64_t, int64_t> backward_attention(uint64_t fwd_thread, int64_t seq);
  void resolve_locked(bool wait);  // mu_ held

  const int slot_;
  const uint64_t generation_;
  const bool host_timing_;  // host clocks per op (time without a device timeline, or trace)
  const bool tracing_;
  const bool nvtx_ops_;
  const bool time_ops_;      // device timeline: mark every counted op too
  const bool effective_;     // read mask values (ProfilerOptions::effective)
  const bool nvtx_regions_;  // NVTX ranges for named regions (record_function)
  const bool comm_timing_;   // timed: collectives' backend works and the exposure clock
  const int64_t start_ns_;
  const std::unique_ptr<DeviceSteps> device_;  // null: host clocks
  const int8_t tl_type_;
  const int8_t tl_index_;  // -1: any device of the type
  std::atomic<uint8_t> forced_phase_{static_cast<uint8_t>(Phase::kForward)};
  std::atomic<int> paused_{0};  // > 0: ops start unobserved (their frames are skipped)
  std::atomic<uint64_t> own_callback_{0};
  std::mutex mu_;  // buffers_ (registration, collect, backward lookups) and device_ reads
  // first_buffer(): written once, under mu_, before first_rf_thread_ is published.
  std::atomic<uint64_t> first_rf_thread_{0};
  pthread_t first_pthread_{};
  ThreadBuffer* first_buffer_ = nullptr;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers_;
  WatchedParams watched_;  // read-only while running
  // What flops_effective used (Report::effective_basis), bits of kBasis* in session.cpp.
  std::atomic<uint32_t> basis_{0};
  std::atomic<bool> any_seq_attention_{false};  // some thread recorded a seq_attention entry
  std::mutex errors_mu_;                        // rule_errors_ (the error path only)
  std::map<std::string, std::string> rule_errors_;
  CommTracker comm_;
};

}  // namespace effmetrics
