// The RecordFunction observer behind effmetrics::Profiler (with timing_cuda.cpp and memory.cpp,
// one of the few translation units of the core that include ATen headers).
//
// Hot path: no lock, no allocation in steady state. Each (profiler, thread) pair owns a buffer
// with its op stack (frames are reused), an op-name cache and the accumulated cells. Callbacks
// are plain function pointers with no user data, so each active profiler takes one of
// kMaxProfilers slots, and slot S registers on_start<S>/on_end<S>.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/graph_task.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <deque>
#include <exception>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "effmetrics/nvtx.h"
#include "effmetrics/profiler.h"

namespace effmetrics {
namespace {

// What we know about an op name, resolved once per name.
struct OpInfo {
  uint32_t id = 0;
  const char* name = nullptr;  // interned, stable
  const OpRule* rule = nullptr;
  bool is_op = false;  // a dispatcher operator (vs. a named region or an autograd node)
};

// Op names, process-wide. Thread-local caches hold string_views into `names` (stable deque).
struct OpNames {
  std::mutex mu;
  std::deque<std::string> names;
  std::unordered_map<std::string_view, OpInfo> infos;

  // The interned name (stable storage) and what we know of it.
  std::pair<std::string_view, OpInfo> resolve(const char* name, const char* overload) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = infos.find(std::string_view(name));
    if (it != infos.end()) return *it;
    names.emplace_back(name);
    OpInfo info;
    info.id = static_cast<uint32_t>(names.size() - 1);
    info.name = names.back().c_str();
    info.rule = find_rule(names.back());
    info.is_op = c10::Dispatcher::singleton()
                     .findOp(c10::OperatorName(names.back(), overload ? overload : ""))
                     .has_value();
    return *infos.emplace(std::string_view(names.back()), info).first;
  }
  std::string name(uint32_t id) {
    std::lock_guard<std::mutex> lock(mu);
    return names.at(id);
  }
  std::vector<std::string> names_of(const std::vector<uint32_t>& ids) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (uint32_t id : ids) out.push_back(names.at(id));
    return out;
  }
};

OpNames& op_names() {
  static OpNames* n = new OpNames();  // never destroyed: callbacks may run during exit
  return *n;
}

struct Frame {
  at::RecordFunctionHandle handle = 0;
  int64_t t0 = 0;  // steady_clock ns at start (timing only)
  const OpInfo* info = nullptr;
  uint32_t scope = kRootScope;
  Phase phase = Phase::kForward;
  bool absorbed = false;    // inside an op with a FLOP rule: counted by that op
  bool under_rule = false;  // some ancestor has a (memory or view) rule
  bool has_child = false;
  bool child_counted = false;  // a descendant with a rule counted
  bool flops_below = false;    // a descendant with a FLOP rule counted
  bool nvtx = false;           // an NVTX range is open for this op
  // Device timeline (ProfilerOptions::device):
  bool on_device = false;   // a tensor or device argument on the timeline's device
  bool in_span = false;     // an ancestor holds an outer span
  bool outer_span = false;  // the outermost op on the device: its span is busy time
  bool op_span = false;     // time_ops: marked for its own time
  uint32_t mark0 = 0;
  uint32_t step = 0;
  OpCall call;
};

// Marks around an op on the device timeline, read once the device has passed them.
struct DeviceSpan {
  uint32_t mark0, mark1;
  uint32_t step;
  uint32_t scope;
  uint32_t op;
  Phase phase;
  bool outer;
  bool has_cell = false;
  uint64_t cell_key = 0;
};

struct Cell {
  OpKind kind = OpKind::kUnsupported;
  Counts counts;
};

// One timed op as the hot path records it; names are resolved when the report is built.
struct RawEvent {
  uint32_t op;
  uint32_t scope;
  Phase phase;
  int64_t start_ns, dur_ns, flops, bytes;
};

// Cells keyed by scope << 32 | op id << 2 | unsupported << 1 | phase (an op counted normally
// and the same op listed as unsupported keep apart), in an open-addressing table that only
// allocates when it grows: the profiled model's own large allocations should find the heap as
// they left it (per-op node allocations interleaved with them fragment it and multiply the
// page faults of the next forward).
class CellTable {
 public:
  CellTable() { slots_.resize(1024); }
  Cell& at(uint64_t key) {
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
  // Visits the used slots only (the table is mostly empty and cold when a report is built).
  template <typename F>
  void for_each(F&& f) const {
    for (uint32_t i : used_) f(slots_[i].key, slots_[i].cell);
  }
  size_t size() const { return used_.size(); }
  void clear() {
    for (uint32_t i : used_) slots_[i].used = false;
    used_.clear();
  }

 private:
  struct Slot {
    uint64_t key = 0;
    bool used = false;
    Cell cell;
  };
  Slot* find(uint64_t key) {
    size_t mask = slots_.size() - 1;
    size_t i = (key * 0x9E3779B97F4A7C15ull) >> 20 & mask;
    while (slots_[i].used && slots_[i].key != key) i = (i + 1) & mask;
    return &slots_[i];
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    std::vector<uint32_t> used;
    used.swap(used_);
    used_.reserve(used.capacity());
    for (uint32_t i : used) at(old[i].key) = old[i].cell;
  }
  std::vector<Slot> slots_;
  std::vector<uint32_t> used_;  // indices of the used slots, in insertion order
};

struct ThreadBuffer {
  uint64_t rf_thread_id = 0;  // at::RecordFunction::currentThreadId() of the owning thread
  std::vector<Frame> stack;
  size_t depth = 0;
  std::unordered_map<std::string_view, OpInfo> op_cache;
  CellTable cells;
  std::vector<std::pair<int64_t, uint32_t>> seq_scopes;  // forward seqNr -> scope, ascending
  int64_t last_seq = -1;
  uint32_t last_node_scope = kRootScope;  // scope of the last autograd node started here
  std::vector<int64_t> watched_uses;
  int64_t busy_ns = 0;            // time inside top-level ops (timing only)
  std::vector<RawEvent> events;   // timed ops (trace only)
  std::vector<DeviceSpan> spans;  // device timeline: spans not yet read, in step order

  const OpInfo& info(const at::RecordFunction& fn) {
    const char* name = fn.name();
    auto it = op_cache.find(std::string_view(name));
    if (it != op_cache.end()) return it->second;
    // Keyed by the interned storage: the callback's string may be temporary.
    return op_cache.insert(op_names().resolve(name, fn.overload_name())).first->second;
  }
};

std::atomic<uint64_t> g_generation{1};

// Thread buffers outlive their session in a pool, so a new profiler on a thread reuses frames,
// op-name cache and cell table (and allocates nothing while the model runs).
std::mutex g_pool_mu;
std::vector<std::unique_ptr<ThreadBuffer>>& buffer_pool() {
  static auto* pool = new std::vector<std::unique_ptr<ThreadBuffer>>();
  return *pool;
}

std::unique_ptr<ThreadBuffer> acquire_buffer() {
  {
    std::lock_guard<std::mutex> lock(g_pool_mu);
    auto& pool = buffer_pool();
    if (!pool.empty()) {
      auto buf = std::move(pool.back());
      pool.pop_back();
      return buf;
    }
  }
  auto buf = std::make_unique<ThreadBuffer>();
  buf->stack.resize(64);
  buf->seq_scopes.reserve(4096);
  return buf;
}

void release_buffer(std::unique_ptr<ThreadBuffer> buf) {
  buf->depth = 0;
  buf->cells.clear();
  buf->seq_scopes.clear();
  buf->last_seq = -1;
  buf->last_node_scope = kRootScope;
  buf->busy_ns = 0;
  buf->events.clear();
  buf->spans.clear();
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (buffer_pool().size() < 64) buffer_pool().push_back(std::move(buf));
}

}  // namespace

class Session {
 public:
  Session(int slot, const ProfilerOptions& options, std::shared_ptr<DeviceTimeline> timeline)
      : slot_(slot),
        generation_(g_generation.fetch_add(1)),
        timing_((options.time && !timeline) || options.trace),
        tracing_(options.trace),
        nvtx_ops_(options.nvtx_ops),
        start_ns_(steady_now_ns()),
        tl_(std::move(timeline)),
        tl_type_(tl_ ? tl_->device_type() : -1),
        tl_index_(tl_ ? tl_->device_index() : -1),
        time_ops_(tl_ && options.time_ops) {}

  int slot() const { return slot_; }
  uint64_t generation() const { return generation_; }

  ~Session() {
    for (auto& buf : buffers_) release_buffer(std::move(buf));
  }

  bool timeline() const { return tl_ != nullptr; }
  // Step boundaries on the device timeline: start() and each snapshot() close one step and open
  // the next, so the profiler's own work between them is in no step.
  void open_step() {
    step_begin_ = tl_->mark();
    if (steps_.empty() && device_steps_.empty()) origin_ = step_begin_;
  }
  void close_step() {
    steps_.push_back({step_begin_, tl_->mark()});
    step_.fetch_add(1, std::memory_order_relaxed);
  }
  // Reads the spans of every closed step the device has passed (waiting for it if asked):
  // busy/idle per step, self time per scope, per-op times (time_ops), device trace events.
  void resolve(bool wait);
  // Resolved steps from index `first` on.
  std::vector<DeviceStep> device_steps(size_t first) const {
    if (first >= device_steps_.size()) return {};
    return {device_steps_.begin() + static_cast<std::ptrdiff_t>(first), device_steps_.end()};
  }

  ThreadBuffer* register_thread() {
    auto buf = acquire_buffer();
    buf->rf_thread_id = at::RecordFunction::currentThreadId();
    buf->watched_uses.assign(watched_numel_.size(), 0);
    std::lock_guard<std::mutex> lock(mu_);
    buffers_.push_back(std::move(buf));
    return buffers_.back().get();
  }

  void watch(const void* impl, int64_t numel) {
    if (watched_.emplace(impl, watched_numel_.size()).second) watched_numel_.push_back(numel);
  }

  void on_start(const at::RecordFunction& fn, ThreadBuffer& tb);
  void on_end(const at::RecordFunction& fn, ThreadBuffer& tb);

  std::atomic<uint8_t> forced_phase{static_cast<uint8_t>(Phase::kForward)};

  // Sums every thread's cells into a report.
  Report collect(const std::vector<int64_t>& calls, const std::vector<ScopeEvent>& scope_events,
                 bool final) {
    if (tl_) resolve(/*wait=*/final);
    std::vector<std::pair<uint64_t, Cell>> keyed;
    std::vector<int64_t> uses(watched_numel_.size(), 0);
    std::vector<std::pair<uint64_t, RawEvent>> events;
    int64_t busy_ns = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t n = 0;
      for (auto& buf : buffers_) n += buf->cells.size();
      keyed.reserve(n);
      for (auto& buf : buffers_) {
        busy_ns += buf->busy_ns;
        for (const RawEvent& e : buf->events) events.emplace_back(buf->rf_thread_id, e);
        buf->cells.for_each([&](uint64_t key, const Cell& cell) { keyed.emplace_back(key, cell); });
        for (size_t i = 0; i < uses.size(); ++i) uses[i] += buf->watched_uses[i];
      }
      for (const RawEvent& e : device_events_) events.emplace_back(kDeviceTrack, e);
    }
    std::vector<RawCell> cells = merge_cells(std::move(keyed));
    std::vector<ScopeNode> nodes = scope_nodes();
    Report r = Report::build(cells, nodes, calls, tl_ ? &scope_time_ : nullptr);
    if (tl_) {
      r.clock = tl_->clock();
      r.op_times = time_ops_;
      if (final) r.device_steps = device_steps_;  // snapshots: Profiler::device_steps()
      r.wall_ns = device_wall_ns_;
      r.busy_ns = device_busy_ns_;
    } else if (timing_) {
      r.clock = "steady_clock";
      r.op_times = true;
      r.wall_ns = steady_now_ns() - start_ns_;
      r.busy_ns = busy_ns;
    }
    if (tracing_) add_trace(r, events, scope_events, nodes);
    if (!watched_numel_.empty()) {
      r.params_applied = 0;
      r.params_touched = 0;
      for (size_t i = 0; i < uses.size(); ++i) {
        r.params_applied += uses[i] * watched_numel_[i];
        if (uses[i] > 0) r.params_touched += watched_numel_[i];
      }
    }
    return r;
  }

 private:
  // One cell per key (threads' cells summed), as RawCells in a deterministic order: by scope
  // node, then op name, then phase. Op names are looked up once per distinct op.
  static std::vector<RawCell> merge_cells(std::vector<std::pair<uint64_t, Cell>> keyed) {
    auto by_key = [](const auto& a, const auto& b) { return a.first < b.first; };
    std::sort(keyed.begin(), keyed.end(), by_key);
    size_t out = 0;
    for (size_t i = 0; i < keyed.size(); ++i) {
      if (out > 0 && keyed[out - 1].first == keyed[i].first) {
        keyed[out - 1].second.counts.add(keyed[i].second.counts);
      } else {
        keyed[out++] = keyed[i];
      }
    }
    keyed.resize(out);
    auto op_of = [](uint64_t key) { return static_cast<uint32_t>((key & 0xffffffffu) >> 2); };
    std::vector<uint32_t> ops;
    for (const auto& kc : keyed) ops.push_back(op_of(kc.first));
    std::sort(ops.begin(), ops.end());
    ops.erase(std::unique(ops.begin(), ops.end()), ops.end());
    std::vector<std::string> names = op_names().names_of(ops);
    std::vector<uint32_t> by_name(ops.size());  // indices into ops, in name order
    std::iota(by_name.begin(), by_name.end(), 0u);
    std::sort(by_name.begin(), by_name.end(),
              [&](uint32_t a, uint32_t b) { return names[a] < names[b]; });
    std::vector<uint32_t> rank(ops.size());  // rank[i]: the place of ops[i] in name order
    for (uint32_t r = 0; r < by_name.size(); ++r) rank[by_name[r]] = r;
    auto slot = [&](uint64_t key) {
      return static_cast<size_t>(std::lower_bound(ops.begin(), ops.end(), op_of(key)) -
                                 ops.begin());
    };
    // (scope, op rank, phase, unsupported bit) orders the cells.
    std::vector<std::pair<uint64_t, size_t>> order;
    order.reserve(keyed.size());
    for (size_t i = 0; i < keyed.size(); ++i) {
      const uint64_t key = keyed[i].first;
      const uint64_t sort_key =
          (key >> 32) << 32 | uint64_t{rank[slot(key)]} << 2 | (key & 1) << 1 | ((key >> 1) & 1);
      order.emplace_back(sort_key, i);
    }
    std::sort(order.begin(), order.end());
    std::vector<RawCell> cells(keyed.size());
    for (size_t k = 0; k < order.size(); ++k) {
      const auto& [key, cell] = keyed[order[k].second];
      RawCell& raw = cells[k];
      raw.scope = static_cast<uint32_t>(key >> 32);
      raw.op = names[slot(key)];
      raw.phase = static_cast<Phase>(key & 1);
      raw.kind = cell.kind;
      raw.counts = cell.counts;
    }
    return cells;
  }

  void add_trace(Report& r, const std::vector<std::pair<uint64_t, RawEvent>>& events,
                 const std::vector<ScopeEvent>& scope_events, const std::vector<ScopeNode>& nodes) {
    for (const auto& [thread, e] : events) {
      TraceEvent t;
      t.device = thread == kDeviceTrack;
      t.name = op_names().name(e.op);
      t.module = e.scope < nodes.size() ? nodes[e.scope].name : "";
      t.phase = e.phase;
      t.thread = t.device ? 0 : thread;
      t.start_ns = e.start_ns - start_ns_;
      t.dur_ns = e.dur_ns;
      t.flops = e.flops;
      t.bytes = e.bytes;
      r.events.push_back(std::move(t));
    }
    // Module spans from the owner thread's enter/exit pairs.
    std::vector<const ScopeEvent*> open;
    for (const ScopeEvent& e : scope_events) {
      if (e.enter) {
        open.push_back(&e);
      } else if (!open.empty()) {
        TraceEvent t;
        t.name = open.back()->node < nodes.size() ? nodes[open.back()->node].name : "";
        t.is_module = true;
        t.thread = at::RecordFunction::currentThreadId();
        t.start_ns = open.back()->time_ns - start_ns_;
        t.dur_ns = e.time_ns - open.back()->time_ns;
        r.events.push_back(std::move(t));
        open.pop_back();
      }
    }
    std::stable_sort(
        r.events.begin(), r.events.end(),
        [](const TraceEvent& a, const TraceEvent& b) { return a.start_ns < b.start_ns; });
  }

  uint32_t backward_scope(uint64_t fwd_thread, int64_t seq) {
    if (seq < 0) return kRootScope;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& buf : buffers_) {
      if (buf->rf_thread_id != fwd_thread) continue;
      auto& v = buf->seq_scopes;
      // The last forward op that started at or before this sequence number.
      auto it = std::upper_bound(v.begin(), v.end(), std::make_pair(seq, UINT32_MAX));
      if (it != v.begin()) return std::prev(it)->second;
    }
    return kRootScope;
  }

  // An op's NVTX range: its name and its tensor inputs' shapes, "aten::addmm [576] [1, 192]
  // [192, 576]" (tensor lists element by element; "[?]" where sizes cannot be read). A tool
  // copies the message during the push (NVTX users push temporaries), so a temporary will do.
  static std::string nvtx_op_message(const char* name, c10::ArrayRef<const c10::IValue> inputs) {
    std::string msg = name;
    auto add = [&](const at::Tensor& t) {
      if (!t.defined()) return;
      if (!dense_shape(t)) {
        msg += " [?]";
        return;
      }
      msg += " [";
      const auto sizes = t.sizes();
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (i) msg += ", ";
        msg += std::to_string(sizes[i]);
      }
      msg += "]";
    };
    for (const c10::IValue& v : inputs) {
      if (v.isTensor()) {
        add(v.toTensor());
      } else if (v.isTensorList()) {
        for (const at::Tensor& t : v.toTensorList().vec()) add(t);
      } else if (v.isOptionalTensorList()) {
        for (std::optional<at::Tensor> t : v.toOptionalTensorList()) {
          if (t.has_value()) add(*t);
        }
      }
    }
    return msg;
  }

  // Nested, sparse and symbolic-size tensors have no dense shape a rule could use.
  static bool dense_shape(const at::Tensor& t) {
    c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    return !impl->is_nested() && !impl->has_symbolic_sizes_strides() && t.layout() == c10::kStrided;
  }

  static void capture_tensor(const at::Tensor& t, OpCall& call, bool in_list) {
    if (!t.defined()) {
      in_list ? call.add_list_tensor(nullptr, nullptr, 0, 0, false) : call.add_none();
      return;
    }
    const void* id = t.unsafeGetTensorImpl();
    if (!dense_shape(t)) {
      call.set_unknown_shape();
      in_list ? call.add_list_tensor(id, nullptr, 0, 0, false) : call.add_other();
      return;
    }
    auto sizes = t.sizes();
    int itemsize = static_cast<int>(t.dtype().itemsize());
    int ndim = static_cast<int>(sizes.size());
    if (in_list) {
      call.add_list_tensor(id, sizes.data(), ndim, itemsize);
    } else {
      call.add_tensor(id, sizes.data(), ndim, itemsize);
    }
  }

  // On the timeline's device (a device argument without an index: the current one, assumed).
  bool on_timeline(c10::Device d) const {
    return static_cast<int8_t>(d.type()) == tl_type_ &&
           (tl_index_ < 0 || !d.has_index() || d.index() == tl_index_);
  }
  bool on_timeline(const at::Tensor& t) const { return t.defined() && on_timeline(t.device()); }

  // Records the inputs in `call`; sets *on_device when one is on the timeline's device (a tensor,
  // or a device argument: factories and copies to the device).
  void capture_inputs(c10::ArrayRef<const c10::IValue> inputs, OpCall& call, ThreadBuffer* watch,
                      bool* on_device) {
    for (const c10::IValue& v : inputs) {
      if (v.isTensor()) {
        const at::Tensor& t = v.toTensor();
        capture_tensor(t, call, false);
        if (watch && t.defined()) count_use(t.unsafeGetTensorImpl(), *watch);
        if (tl_ && on_timeline(t)) *on_device = true;
      } else if (v.isTensorList()) {
        call.begin_tensor_list();
        for (const at::Tensor& t : v.toTensorList()) {
          capture_tensor(t, call, true);
          if (watch && t.defined()) count_use(t.unsafeGetTensorImpl(), *watch);
          if (tl_ && on_timeline(t)) *on_device = true;
        }
      } else if (v.isInt()) {
        call.add_int(v.toInt());
      } else if (v.isBool()) {
        call.add_bool(v.toBool());
      } else if (v.isDouble()) {
        call.add_double(v.toDouble());
      } else if (v.isIntList()) {
        call.begin_int_list();
        for (const c10::IValue& e : v.toListRef()) call.push_list_int(e.toInt());
      } else if (v.isBoolList()) {
        call.begin_int_list(ArgType::kBoolList);
        for (const c10::IValue& e : v.toListRef()) call.push_list_int(e.toBool() ? 1 : 0);
      } else if (v.isList()) {  // Tensor?[] (aten::index); int and bool lists are above
        call.begin_tensor_list();
        for (const c10::IValue& e : v.toListRef()) {
          if (e.isTensor()) {
            capture_tensor(e.toTensor(), call, true);
            if (tl_ && on_timeline(e.toTensor())) *on_device = true;
          } else {
            call.add_list_tensor(nullptr, nullptr, 0, 0, false);
          }
        }
      } else if (v.isNone()) {
        call.add_none();
      } else if (v.isDevice()) {
        if (tl_ && on_timeline(v.toDevice())) *on_device = true;
        call.add_other();
      } else {
        call.add_other();
      }
    }
  }

  void capture_outputs(const std::vector<c10::IValue>& outputs, OpCall& call) {
    for (const c10::IValue& v : outputs) {
      if (v.isTensor()) {
        add_output(v.toTensor(), call);
      } else if (v.isTensorList()) {
        for (const at::Tensor& t : v.toTensorList()) add_output(t, call);
      }
    }
  }

  static void add_output(const at::Tensor& t, OpCall& call) {
    if (!t.defined()) return;
    if (!dense_shape(t)) {
      call.set_unknown_shape();
      return;
    }
    auto sizes = t.sizes();
    call.add_output(t.unsafeGetTensorImpl(), sizes.data(), static_cast<int>(sizes.size()),
                    static_cast<int>(t.dtype().itemsize()));
  }

  void count_use(const void* impl, ThreadBuffer& tb) {
    auto it = watched_.find(impl);
    if (it != watched_.end()) ++tb.watched_uses[it->second];
  }

  // span: the op's entry in tb.spans (-1: none), whose device time goes to this cell later.
  void add_cell(ThreadBuffer& tb, const Frame& f, OpKind kind, const OpCost& cost, int64_t dur_ns,
                int64_t span) {
    uint64_t key = (static_cast<uint64_t>(f.scope) << 32) |
                   (static_cast<uint64_t>(f.info->id) << 2) |
                   (kind == OpKind::kUnsupported ? 2u : 0u) | static_cast<uint64_t>(f.phase);
    Cell& cell = tb.cells.at(key);
    cell.kind = kind;
    cell.counts.add_op(kind, f.phase, cost);
    if (tl_) {
      if (span >= 0 && f.op_span) {
        tb.spans[span].has_cell = true;
        tb.spans[span].cell_key = key;
      }
    } else {
      cell.counts.time_ns += dur_ns;
    }
    if (tracing_) {
      tb.events.push_back(RawEvent{
          f.info->id, f.scope, f.phase, f.t0, dur_ns, cost.flops,
          std::max<int64_t>(cost.bytes_read, 0) + std::max<int64_t>(cost.bytes_written, 0)});
    }
  }

  static constexpr uint64_t kDeviceTrack = ~0ull;  // the thread of device trace events

  const int slot_;
  const uint64_t generation_;
  const bool timing_;  // host clocks per op (time without a device timeline, or trace)
  const bool tracing_;
  const bool nvtx_ops_;
  const int64_t start_ns_;
  // Device timeline (null: host clocks). Steps: marks at their boundaries, until resolved.
  const std::shared_ptr<DeviceTimeline> tl_;
  const int8_t tl_type_;
  const int8_t tl_index_;  // -1: any device of the type
  const bool time_ops_;
  std::atomic<uint32_t> step_{0};  // the open step's index
  uint32_t step_begin_ = 0;
  uint32_t origin_ = 0;  // the first step's begin mark: time zero of device trace events
  std::vector<std::pair<uint32_t, uint32_t>> steps_;  // closed steps' (begin, end) marks
  std::vector<DeviceStep> device_steps_;              // resolved steps, in order
  int64_t device_wall_ns_ = 0, device_busy_ns_ = 0;   // their sums
  std::vector<int64_t> scope_time_;                   // device self time per scope node
  std::vector<RawEvent> device_events_;               // trace
  std::mutex mu_;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers_;
  std::unordered_map<const void*, size_t> watched_;  // read-only while running
  std::vector<int64_t> watched_numel_;
};

void Session::on_start(const at::RecordFunction& fn, ThreadBuffer& tb) {
  Frame* parent = tb.depth ? &tb.stack[tb.depth - 1] : nullptr;
  if (tb.depth == tb.stack.size()) {
    tb.stack.emplace_back();
    parent = tb.depth ? &tb.stack[tb.depth - 1] : nullptr;  // emplace may have moved frames
  }
  Frame& f = tb.stack[tb.depth++];
  f.handle = fn.handle();
  f.has_child = false;
  f.child_counted = false;
  f.flops_below = false;
  f.absorbed = false;
  f.nvtx = false;
  f.on_device = false;
  f.outer_span = false;
  f.op_span = false;
  f.call.clear();
  if (parent) {
    parent->has_child = true;
    const OpRule* prule = parent->info ? parent->info->rule : nullptr;
    if (parent->absorbed || (prule && owns_children(*prule))) {
      f.absorbed = true;
      f.info = nullptr;
      return;
    }
  }
  f.info = &tb.info(fn);
  f.under_rule = parent && (parent->under_rule || parent->info->rule != nullptr);
  f.in_span = parent && (parent->in_span || parent->outer_span);
  if (nvtx_ops_ && f.info->is_op) {
    f.nvtx = true;
    nvtx_range_push(nvtx_op_message(f.info->name, fn.inputs()).c_str());
  }
  if (timing_) f.t0 = steady_now_ns();
  const bool backward_node = fn.scope() == at::RecordScope::BACKWARD_FUNCTION;
  if (backward_node) {
    f.phase = Phase::kBackward;
    f.scope = backward_scope(fn.forwardThreadId(), fn.seqNr());
    tb.last_node_scope = f.scope;
    // The engine wraps each node in "autograd::engine::evaluate_function: <node>" and reduces
    // the node's gradients (sum_to) inside that wrapper after the node: charge them to it too.
    if (parent && !parent->info->is_op) parent->scope = f.scope;
  } else if (parent) {
    f.phase = parent->phase;
    f.scope = parent->phase == Phase::kBackward ? parent->scope : current_scope();
  } else if (torch::autograd::get_current_graph_task_id() != -1) {
    // The engine's own ops between nodes (sum_to in validate_outputs, gradient accumulation):
    // backward, charged to the node that just ran on this thread.
    f.phase = Phase::kBackward;
    f.scope = tb.last_node_scope;
  } else {
    f.phase = static_cast<Phase>(forced_phase.load(std::memory_order_relaxed));
    f.scope = current_scope();
  }
  if (f.phase == Phase::kForward && fn.seqNr() >= 0 && fn.seqNr() != tb.last_seq) {
    tb.seq_scopes.emplace_back(fn.seqNr(), f.scope);
    tb.last_seq = fn.seqNr();
  }
  if (!f.info->is_op) return;
  // A view's cost is 0 whatever its arguments (views are most of the ops): capture nothing.
  if (f.info->rule && f.info->rule->kind == OpKind::kView && (parent || watched_.empty())) return;
  // Parameter uses: direct inputs of top-level forward ops (linear's weight, not its t()).
  ThreadBuffer* watch =
      (!parent && f.phase == Phase::kForward && !watched_.empty()) ? &tb : nullptr;
  try {
    capture_inputs(fn.inputs(), f.call, watch, &f.on_device);
  } catch (const std::exception&) {
    f.call.clear();  // an exotic tensor whose sizes cannot be read: count it as 0, never throw
  }
  if (f.on_device) {
    f.outer_span = !f.in_span;
    f.op_span = time_ops_ && !(f.info->rule && f.info->rule->kind == OpKind::kView);
    if (f.outer_span || f.op_span) {
      f.step = step_.load(std::memory_order_relaxed);
      f.mark0 = tl_->mark();  // last: the host work above is not in the span
    }
  }
}

void Session::on_end(const at::RecordFunction& fn, ThreadBuffer& tb) {
  const int64_t t1 = timing_ ? steady_now_ns() : 0;
  if (tb.depth == 0) return;  // started before this profiler
  Frame& f = tb.stack[--tb.depth];
  if (f.handle != fn.handle()) {
    // Not the op we expect on top (cannot happen for strictly nested scopes): resynchronise.
    while (tb.depth > 0 && tb.stack[tb.depth].handle != fn.handle()) --tb.depth;
    return;
  }
  if (f.absorbed) return;
  int64_t span = -1;
  if (f.outer_span || f.op_span) {
    const uint32_t mark1 = tl_->mark();
    tb.spans.push_back(
        DeviceSpan{f.mark0, mark1, f.step, f.scope, f.info->id, f.phase, f.outer_span});
    span = static_cast<int64_t>(tb.spans.size()) - 1;
  }
  if (f.nvtx) nvtx_range_pop();  // also when unwinding: ranges stay balanced
  const int64_t dur_ns = timing_ ? t1 - f.t0 : 0;
  if (tb.depth == 0) tb.busy_ns += dur_ns;  // top-level frames: the thread is busy in ops
  // The op is ending by an exception (its RecordFunction is being unwound): it did no work.
  if (std::uncaught_exceptions() > 0) return;
  Frame* parent = tb.depth ? &tb.stack[tb.depth - 1] : nullptr;
  const OpRule* rule = f.info->rule;
  bool counted = false;
  try {
    if (rule && !f.child_counted) {
      if (rule->kind != OpKind::kView) capture_outputs(fn.outputs(), f.call);
      if (f.call.unknown_shape() && rule->kind != OpKind::kView) {
        // A rule for dense tensors would guess here: listed as unsupported, never a guess.
        add_cell(tb, f, OpKind::kUnsupported, OpCost{0, 0, 0, 0}, dur_ns, span);
      } else {
        add_cell(tb, f, rule->kind, evaluate(*rule, f.call), dur_ns, span);
      }
      counted = true;
    } else if (!rule && f.info->is_op && !f.under_rule && !f.flops_below) {
      // No rule and nothing below it counted FLOPs: its work is unknown, so it is listed as
      // unsupported, never a silent zero. A leaf's bytes are counted here; a composite's
      // bytes were counted by its children.
      OpCost cost{0, 0, 0, 0};
      if (!f.has_child) {
        capture_outputs(fn.outputs(), f.call);
        cost = OpCost{0, 0, f.call.input_bytes(), f.call.output_bytes()};
      }
      add_cell(tb, f, OpKind::kUnsupported, cost, dur_ns, span);
    }
  } catch (const std::exception&) {
  }
  if (parent) {
    // Views and allocations below a memory op (clone -> empty_like) do not take its count.
    parent->child_counted |= (counted && rule->kind != OpKind::kView) || f.child_counted;
    parent->flops_below |= (counted && owns_children(*rule)) || f.flops_below;
  }
}

void Session::resolve(bool wait) {
  std::lock_guard<std::mutex> lock(mu_);
  while (device_steps_.size() < steps_.size()) {
    const uint32_t step = static_cast<uint32_t>(device_steps_.size());
    const auto [begin, end] = steps_[step];
    if (!tl_->done(end)) {
      if (!wait) return;
      tl_->wait(end);
    }
    // Times relative to the step's begin mark: short intervals keep the events' resolution.
    std::vector<Interval> busy;
    for (auto& buf : buffers_) {
      auto& spans = buf->spans;
      size_t i = 0;
      // <=: an op on another thread that ended after its step was read joins this step.
      for (; i < spans.size() && spans[i].step <= step; ++i) {
        const DeviceSpan& sp = spans[i];
        tl_->wait(sp.mark1);  // passed with `end` on one stream; not if the op used another
        const int64_t t0 = tl_->elapsed_ns(begin, sp.mark0);
        const int64_t t1 = tl_->elapsed_ns(begin, sp.mark1);
        const int64_t dur = std::max<int64_t>(t1 - t0, 0);
        if (sp.outer) {
          busy.push_back(Interval{t0, t1});
          if (scope_time_.size() <= sp.scope) scope_time_.resize(sp.scope + 1, 0);
          scope_time_[sp.scope] += dur;
        }
        if (sp.has_cell) buf->cells.at(sp.cell_key).counts.time_ns += dur;
        if (tracing_) {
          device_events_.push_back(RawEvent{sp.op, sp.scope, sp.phase,
                                            start_ns_ + tl_->elapsed_ns(origin_, sp.mark0), dur, 0,
                                            0});
        }
        tl_->release(sp.mark0);
        tl_->release(sp.mark1);
      }
      spans.erase(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(i));
    }
    BusySplit split = split_busy(std::move(busy), 0, tl_->elapsed_ns(begin, end));
    device_steps_.push_back(DeviceStep{split.wall_ns, split.busy_ns, split.idle_ns});
    device_wall_ns_ += split.wall_ns;
    device_busy_ns_ += split.busy_ns;
    if (begin != origin_ || !tracing_) tl_->release(begin);
    tl_->release(end);
  }
}

namespace {

std::array<std::atomic<Session*>, Profiler::kMaxProfilers> g_slots{};
std::mutex g_slots_mu;

struct ThreadSlots {
  std::array<uint64_t, Profiler::kMaxProfilers> generation{};
  std::array<ThreadBuffer*, Profiler::kMaxProfilers> buffer{};
};
thread_local ThreadSlots t_slots;

template <int S>
ThreadBuffer* buffer_for(Session* s) {
  if (t_slots.generation[S] != s->generation()) {
    t_slots.buffer[S] = s->register_thread();
    t_slots.generation[S] = s->generation();
  }
  return t_slots.buffer[S];
}

template <int S>
std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  Session* s = g_slots[S].load(std::memory_order_acquire);
  if (s) s->on_start(fn, *buffer_for<S>(s));
  return nullptr;
}

template <int S>
void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  Session* s = g_slots[S].load(std::memory_order_acquire);
  if (s) s->on_end(fn, *buffer_for<S>(s));
}

template <int... S>
constexpr auto make_callbacks(std::integer_sequence<int, S...>) {
  return std::array<
      std::pair<at::RecordFunctionCallback::StartCallback, at::RecordFunctionCallback::EndCallback>,
      sizeof...(S)>{{{on_start<S>, on_end<S>}...}};
}
const auto kCallbacks = make_callbacks(std::make_integer_sequence<int, Profiler::kMaxProfilers>{});

}  // namespace

// ---------------------------------------------------------------- Profiler

namespace {
// Module calls on this thread since `start`.
std::vector<int64_t> calls_since(const std::vector<int64_t>& start) {
  std::vector<int64_t> diff = scope_calls_snapshot();
  for (size_t k = 0; k < diff.size() && k < start.size(); ++k) diff[k] -= start[k];
  return diff;
}
}  // namespace

Profiler::Profiler(ProfilerOptions options, bool start_now) : options_(options) {
  if (start_now) start();
}

Profiler::~Profiler() {
  if (running()) {
    try {
      stop();
    } catch (...) {
    }
  }
}

bool Profiler::running() const { return session_ != nullptr; }

void Profiler::start() {
  if (running()) throw std::runtime_error("effmetrics: this Profiler is already running");
  std::lock_guard<std::mutex> lock(g_slots_mu);
  int slot = -1;
  for (int s = 0; s < kMaxProfilers && slot < 0; ++s) {
    if (g_slots[s].load() == nullptr) slot = s;
  }
  if (slot < 0) {
    throw std::runtime_error(
        "effmetrics: " + std::to_string(kMaxProfilers) +
        " profilers are already active; stop one (or reuse its report) before starting another");
  }
  std::shared_ptr<DeviceTimeline> timeline = options_.timeline;
  if (!timeline && !options_.device.empty()) {
    if (!timeline_) timeline_ = make_device_timeline(options_.device);  // kept: its event pool
    timeline = timeline_;
  }
  auto session = std::make_unique<Session>(slot, options_, std::move(timeline));
  for (const auto& [impl, numel] : pending_watch_) session->watch(impl, numel);
  pending_watch_.clear();
  at::RecordFunctionCallback cb(kCallbacks[slot].first, kCallbacks[slot].second);
  cb.needsInputs(true).needsOutputs(true).scopes(
      {at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION});
  g_slots[slot].store(session.get(), std::memory_order_release);
  owner_ = std::this_thread::get_id();
  if (options_.nvtx || options_.nvtx_ops) nvtx_acquire();
  calls_at_start_ = scope_calls_snapshot();
  scope_events_.clear();
  if (options_.trace) set_scope_event_sink(&scope_events_);
  callback_handle_ =
      options_.all_threads ? at::addGlobalCallback(cb) : at::addThreadLocalCallback(cb);
  if (session->timeline()) session->open_step();
  session_ = std::move(session);
}

Report Profiler::snapshot() {
  if (!running()) throw std::runtime_error("effmetrics: snapshot() needs a running Profiler");
  if (!session_->timeline())
    return session_->collect(calls_since(calls_at_start_), scope_events_, false);
  session_->close_step();
  Report r = session_->collect(calls_since(calls_at_start_), scope_events_, false);
  session_->open_step();
  return r;
}

std::vector<DeviceStep> Profiler::device_steps(bool wait, size_t first) {
  if (!running()) throw std::runtime_error("effmetrics: device_steps() needs a running Profiler");
  if (!session_->timeline()) {
    throw std::runtime_error(
        "effmetrics: device_steps() needs a device timeline (ProfilerOptions::device)");
  }
  session_->resolve(wait);
  return session_->device_steps(first);
}

Report Profiler::stop() {
  if (!running()) throw std::runtime_error("effmetrics: stop() on a Profiler that is not running");
  if (!options_.all_threads && owner_ != std::this_thread::get_id()) {
    throw std::runtime_error(
        "effmetrics: stop a thread-local Profiler on the thread that started it "
        "(or construct it with ProfilerOptions{.all_threads = true})");
  }
  if (session_->timeline()) session_->close_step();
  {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    at::removeCallback(callback_handle_);
    g_slots[session_->slot()].store(nullptr, std::memory_order_release);
  }
  if (options_.trace) set_scope_event_sink(nullptr);
  if (options_.nvtx || options_.nvtx_ops) nvtx_release();
  Report r = session_->collect(calls_since(calls_at_start_), scope_events_, true);
  session_.reset();
  return r;
}

void Profiler::set_phase(Phase phase) {
  if (!running()) throw std::runtime_error("effmetrics: set_phase() needs a running Profiler");
  session_->forced_phase.store(static_cast<uint8_t>(phase));
}

void Profiler::watch(const void* tensor_impl, int64_t numel) {
  if (running()) {
    throw std::runtime_error("effmetrics: watch() parameters before start()");
  }
  pending_watch_.emplace_back(tensor_impl, numel);
}

}  // namespace effmetrics
