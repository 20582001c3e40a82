#include "session.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/count_nonzero.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/graph_task.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <tuple>

#include "capture.h"
#include "effmetrics/nvtx.h"
#include "process_group.h"

namespace effmetrics {
namespace {

std::atomic<uint64_t> g_generation{1};
thread_local uint64_t t_counted_graphs = 0;  // note_counted_graph() calls on this thread
thread_local int64_t t_attn_kept = 0, t_attn_pairs = 0;  // set_attention_share() on this thread

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
  buf->clear();
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (buffer_pool().size() < 64) buffer_pool().push_back(std::move(buf));
}

// A RecordFunction's identity from its start callback to its end one: its address (handle() is 0
// unless torch's own profiler numbers the records).
uint64_t record_key(const at::RecordFunction& fn) { return reinterpret_cast<uint64_t>(&fn); }

bool is_view(const OpInfo& info) { return info.rule && info.rule->kind == OpKind::kView; }
bool is_collective(const OpInfo& info) {
  return info.rule && info.rule->kind == OpKind::kCollective;
}

// The first tensor a backend's work record names (its input tensors), or null.
const c10::TensorImpl* first_tensor(c10::ArrayRef<const c10::IValue> inputs) {
  for (const c10::IValue& v : inputs) {
    if (v.isTensor()) return v.toTensor().unsafeGetTensorImpl();
    if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) return t.unsafeGetTensorImpl();
    }
  }
  return nullptr;
}

// Report::effective_basis, as bits while running.
constexpr uint32_t kBasisCausal = 1, kBasisMask = 2, kBasisMaskNoData = 4,
                   kBasisMaskNotRequested = 8, kBasisZeros = 16, kBasisBlockMask = 32;

// n * num / den without overflow (num <= den).
int64_t scaled(int64_t n, int64_t num, int64_t den) {
  return static_cast<int64_t>(static_cast<__int128>(n) * num / den);
}

// Report::coverage_ns index of a cell's kind.
int8_t coverage_class(OpKind kind) {
  switch (kind) {
    case OpKind::kMatmul:
    case OpKind::kVector:
      return 0;
    case OpKind::kMemory:
    case OpKind::kView:
    case OpKind::kCollective:  // a rule, no FLOPs: its host time posts the backend's work
      return 1;
    case OpKind::kUnsupported:
    case OpKind::kComposite:  // never a cell's kind (an op without a rule)
      return 2;
  }
  return 2;
}

// Whether the op runs a kernel of its own for a backend (CPU, CUDA, ...), not a composite
// (CompositeImplicitAutograd, CompositeExplicitAutograd: its work is the ops it runs). Looked up
// once per op name and thread; the first overload met decides.
bool own_kernel(const at::RecordFunction& fn, const OpInfo& info) {
  if (info.own_kernel < 0) {
    static const c10::DispatchKeySet kBackends(
        {c10::DispatchKey::CPU, c10::DispatchKey::CUDA, c10::DispatchKey::HIP,
         c10::DispatchKey::XPU, c10::DispatchKey::MPS, c10::DispatchKey::PrivateUse1});
    bool own = false;
    try {
      const std::optional<c10::OperatorName> name = fn.operator_name();
      std::optional<c10::OperatorHandle> op;
      if (name) op = c10::Dispatcher::singleton().findOp(*name);
      own = op && op->hasKernelForAnyDispatchKey(kBackends);
    } catch (const std::exception&) {
    }
    info.own_kernel = own ? 1 : 0;
  }
  return info.own_kernel == 1;
}

// True elements of a boolean mask, or -1 where its values cannot be read (meta, fake or
// functional tensors). Runs an ATen op inside the observer: callbacks off while it runs.
int64_t count_true(const at::Tensor& mask) {
  if (!mask.defined() || mask.is_meta() || !mask.has_storage() ||
      mask.key_set().has(c10::DispatchKey::Python) ||
      mask.key_set().has(c10::DispatchKey::Functionalize) || mask.layout() != c10::kStrided) {
    return -1;
  }
  try {
    at::RecordFunctionGuard off(/*is_enabled=*/false);
    return at::count_nonzero(mask).item<int64_t>();
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

void note_counted_graph() { ++t_counted_graphs; }

std::pair<int64_t, int64_t> set_attention_share(int64_t kept, int64_t pairs) {
  if (pairs < 0 || kept < 0 || kept > pairs) {
    throw std::invalid_argument("effmetrics: an attention share needs 0 <= kept <= pairs");
  }
  std::pair<int64_t, int64_t> before{t_attn_kept, t_attn_pairs};
  t_attn_kept = kept;
  t_attn_pairs = pairs;
  return before;
}

// ---------------------------------------------------------------- ThreadBuffer

inline const OpInfo& ThreadBuffer::info(const at::RecordFunction& fn) {
  const char* name = fn.name();
  NameSlot& slot = name_slots[fibonacci_slot(reinterpret_cast<uintptr_t>(name), kNameSlotBits)];
  if (slot.name == name && std::strcmp(name, slot.info->name) == 0) return *slot.info;
  return info_lookup(fn, name, slot);
}

const OpInfo& ThreadBuffer::info_lookup(const at::RecordFunction& fn, const char* name,
                                        NameSlot& slot) {
  auto it = op_cache.find(std::string_view(name));
  // A dispatcher op carries its schema's name (named regions and autograd nodes do not).
  // Keyed by the interned storage: the callback's string may be temporary.
  const OpInfo& info =
      it != op_cache.end()
          ? it->second
          : op_cache.insert(resolve_op(name, fn.operator_name().has_value())).first->second;
  slot = {name, &info};
  return info;
}

void ThreadBuffer::clear() {
  depth = 0;
  nvtx_regions.clear();
  cells.clear();
  seq_scopes.clear();
  last_node_scope = kRootScope;
  busy_ns = 0;
  seq_attention.clear();
  coverage_ns = {};
  events.clear();
  spans.clear();
  weight_views.clear();
}

// ---------------------------------------------------------------- Session

Session::Session(int slot, const ProfilerOptions& options, std::shared_ptr<DeviceTimeline> timeline)
    : slot_(slot),
      generation_(g_generation.fetch_add(1)),
      host_timing_((options.time && !timeline) || options.trace),
      tracing_(options.trace),
      nvtx_ops_(options.nvtx_ops),
      time_ops_(timeline && options.time_ops),
      effective_(options.effective),
      nvtx_regions_(options.nvtx),
      comm_timing_(options.time),
      start_ns_(steady_now_ns()),
      device_(timeline ? std::make_unique<DeviceSteps>(timeline, options.trace, start_ns_)
                       : nullptr),
      tl_type_(timeline ? timeline->device_type() : -1),
      tl_index_(timeline ? timeline->device_index() : -1) {
  if (tracing_) comm_.keep_spans();
}

Session::~Session() {
  for (auto& buf : buffers_) release_buffer(std::move(buf));
}

ThreadBuffer* Session::register_thread() {
  auto buf = acquire_buffer();
  buf->rf_thread_id = at::RecordFunction::currentThreadId();
  buf->scopes = current_scope_stack();
  // Rules registered or removed since this buffer cached them: look every name up again.
  const uint64_t version = rules_version();
  if (buf->rules_version != version) {
    buf->op_cache.clear();
    buf->name_slots.fill({});
    buf->rules_version = version;
  }
  buf->watched_uses.assign(watched_.size(), 0);
  std::lock_guard<std::mutex> lock(mu_);
  buffers_.push_back(std::move(buf));
  ThreadBuffer* b = buffers_.back().get();
  if (first_buffer_ == nullptr && b->rf_thread_id != 0) {
    first_buffer_ = b;
    first_pthread_ = pthread_self();
    first_rf_thread_.store(b->rf_thread_id, std::memory_order_release);
  }
  return b;
}

void Session::on_start(const at::RecordFunction& fn, ThreadBuffer& tb) {
  if (fn.scope() == at::RecordScope::USER_SCOPE) {  // named regions: not ops
    on_user_scope(fn, tb, /*start=*/true);
    return;
  }
  if (paused_.load(std::memory_order_relaxed) > 0) {
    tb.push(record_key(fn), /*absorbed=*/true);  // e.g. a compiler's tracing: not the model's work
    return;
  }
  if (Frame* above = tb.top()) {
    above->has_child = true;
    if (above->absorbed || (above->info->rule && owns_children(*above->info->rule))) {
      // Counted by the op with the FLOP rule above it: nothing to do.
      tb.push(record_key(fn), /*absorbed=*/true);
      return;
    }
  }
  Frame& f = tb.push(record_key(fn));
  Frame* parent = tb.depth > 1 ? &tb.stack[tb.depth - 2] : nullptr;  // push may move frames
  f.info = &tb.info(fn);
  if (parent) {
    f.attn_kept = parent->attn_kept;
    f.attn_pairs = parent->attn_pairs;
    f.w_nonzero = parent->w_nonzero;
    f.w_numel = parent->w_numel;
  }
  if (comm_timing_ && tb.depth == 1 && !is_collective(*f.info)) {
    f.computing = true;
    comm_.compute(+1);
  }
  f.under_rule = parent && (parent->under_rule || parent->info->rule != nullptr);
  f.in_op = parent && (parent->in_op || parent->info->is_op);
  f.in_span = parent && (parent->in_span || parent->outer_span);
  if (nvtx_ops_ && f.info->is_op) {
    f.nvtx = true;
    nvtx_range_push(nvtx_op_message(f.info->name, fn.inputs()).c_str());
  }
  if (f.info->rule) mute(f, tb);
  if (host_timing_) f.t0 = steady_now_ns();
  if (f.info->compiled_region) f.counted_graphs = t_counted_graphs;
  attribute(fn, parent, tb, f);
  if (!needs_inputs(f)) return;
  // Parameter uses: direct inputs of top-level forward ops (linear's weight, not its t()); named
  // regions around an op (record_function, a compiled region) do not make it a nested one.
  capture(fn, f, !f.in_op && f.phase == Phase::kForward && !watched_.empty(), tb);
  if (f.info->attention && f.attn_pairs == 0) attention_scores(fn, f);
  if (comm_timing_ && is_collective(*f.info) && !f.call.unknown_shape()) {
    // Its time is its backend's work, which starts on another thread or later on this one; on
    // a device (NCCL), the work's start and end events on the backend's stream.
    const c10::TensorImpl* t = first_tensor(fn.inputs());
    f.device_comm = t != nullptr && t->device_type() != c10::DeviceType::CPU &&
                    enable_collective_timing(fn.inputs());
    comm_.expect(CellKey{f.scope, f.info->id, f.phase, false}.pack(), f.call, f.info->barrier,
                 f.device_comm);
  }
  open_span(f);
}

// A named region (record_function, a pipeline schedule's "Forward 3"): an NVTX range with nvtx
// on (a region this thread opened while observed; asynchronous records are not nested). A
// process-group backend's work: the time of its collective.
void Session::on_user_scope(const at::RecordFunction& fn, ThreadBuffer& tb, bool start) {
  const OpInfo& info = tb.info(fn);
  if (info.comm_work) {
    if (comm_timing_) on_comm_work(fn, info, start);
    return;
  }
  if (!nvtx_regions_ || fn.isAsync()) return;
  if (start) {
    if (paused_.load(std::memory_order_relaxed) > 0) return;
    nvtx_range_push(info.name);
    tb.nvtx_regions.push_back(&fn);
  } else if (!tb.nvtx_regions.empty() && tb.nvtx_regions.back() == &fn) {
    nvtx_range_pop();
    tb.nvtx_regions.pop_back();
  }
}

void Session::on_comm_work(const at::RecordFunction& fn, const OpInfo& info, bool start) {
  const int64_t now = steady_now_ns();
  const uint64_t key = record_key(fn);
  if (!start) {
    comm_.work_end(key, now);
  } else if (paused_.load(std::memory_order_relaxed) == 0) {
    // A work no collective claims (started before the profiler, or an unknown op) keeps its own
    // name, at the root.
    const uint64_t fallback = CellKey{kRootScope, info.id, Phase::kForward, false}.pack();
    comm_.work_start(key, first_tensor(fn.inputs()), fallback, info.recv, now);
  }
}

// The op's phase and module scope. Backward nodes take the scope of their forward op; ops
// inside a backward node inherit it; everything else is forward in the current module scope.
void Session::attribute(const at::RecordFunction& fn, Frame* parent, ThreadBuffer& tb, Frame& f) {
  if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION) {
    f.phase = Phase::kBackward;
    f.scope = backward_scope(fn.forwardThreadId(), fn.seqNr());
    tb.last_node_scope = f.scope;
    // The node's forward op had masked attention scores: its gradients need the same share.
    if (any_seq_attention_.load(std::memory_order_relaxed)) {
      std::tie(f.attn_kept, f.attn_pairs) = backward_attention(fn.forwardThreadId(), fn.seqNr());
    }
    // The engine wraps each node in "autograd::engine::evaluate_function: <node>" and reduces
    // the node's gradients (sum_to) inside that wrapper after the node: charge them to it too.
    if (parent && !parent->info->is_op) parent->scope = f.scope;
  } else if (parent) {
    f.phase = parent->phase;
    f.scope = parent->phase == Phase::kBackward ? parent->scope : tb.current_scope();
  } else if (torch::autograd::get_current_graph_task_id() != -1) {
    // The engine's own ops between nodes (sum_to in validate_outputs, gradient accumulation):
    // backward, charged to the node that just ran on this thread.
    f.phase = Phase::kBackward;
    f.scope = tb.last_node_scope;
  } else {
    f.phase = static_cast<Phase>(forced_phase_.load(std::memory_order_relaxed));
    f.scope = tb.current_scope();
  }
  if (f.phase == Phase::kForward) tb.seq_scopes.record(fn.seqNr(), f.scope);
}

// Named regions and autograd nodes have no inputs a rule reads; a view's cost is 0 whatever
// its arguments (views are most of the ops), unless it is a top-level use of a watched parameter.
bool Session::needs_inputs(const Frame& f) const {
  if (!f.info->is_op) return false;
  return !is_view(*f.info) || (!f.in_op && !watched_.empty());
}

void Session::capture(const at::RecordFunction& fn, Frame& f, bool counts_uses, ThreadBuffer& tb) {
  auto on_device = [&](c10::Device d) {
    // A device argument without an index: the current one, assumed.
    if (static_cast<int8_t>(d.type()) == tl_type_ &&
        (tl_index_ < 0 || !d.has_index() || d.index() == tl_index_)) {
      f.on_device = true;
    }
  };
  auto weight = [&](int64_t nonzero, int64_t numel) {
    // A weight with known zeros: its matmul below does nonzero/numel of its products. Two such
    // weights in one op (a fused block): which product uses which is unknown, none.
    f.w_numel = f.w_numel == 0 ? numel : -1;
    f.w_nonzero = nonzero;
  };
  auto on_tensor = [&](const at::Tensor& t) {
    if (counts_uses) {
      const int64_t i = watched_.count_use(t.unsafeGetTensorImpl(), tb.watched_uses);
      if (i >= 0 && watched_.nonzero(i) >= 0) {
        weight(watched_.nonzero(i), watched_.numel(i));
      } else if (i < 0 && !tb.weight_views.empty()) {
        auto it = tb.weight_views.find(t.unsafeGetTensorImpl());
        if (it != tb.weight_views.end() && t.has_storage() &&
            t.storage().unsafeGetStorageImpl() == it->second.storage &&
            t.numel() == it->second.numel) {
          weight(it->second.nonzero, it->second.numel);  // its use was counted at the view
        }
      }
    }
    if (device_) on_device(t.device());
  };
  try {
    capture_inputs(fn.inputs(), f.call, on_tensor, on_device);
  } catch (const std::exception&) {
    f.call.clear();  // an exotic tensor whose sizes cannot be read: count it as 0, never throw
  }
}

// Which attention scores the op needs: causal (from shapes) or a boolean mask's True elements
// (from its values, with ProfilerOptions::effective). Its matmul-class ops (the kernel, or the
// math path's bmm) then count that share in flops_effective.
void Session::attention_scores(const at::RecordFunction& fn, Frame& f) {
  const AttentionArgs& a = *f.info->attention;
  Shape q = f.call.input(a.query), k = f.call.input(a.key);
  if (q.ndim < 2 || k.ndim < 2) return;
  const int64_t sq = a.bshd ? q[1] : q[-2], sk = a.bshd ? k[1] : k[-2];
  if (a.causal >= 0 && f.call.int_arg(a.causal, 0) != 0) {
    f.attn_kept = causal_kept_pairs(sq, sk);
    f.attn_pairs = sq * sk;
    basis_.fetch_or(kBasisCausal, std::memory_order_relaxed);
    return;
  }
  if (a.mask < 0 || !f.call.is_tensor(a.mask)) return;
  const auto inputs = fn.inputs();  // valid: the start callback
  if (static_cast<size_t>(a.mask) >= inputs.size() || !inputs[a.mask].isTensor()) return;
  const at::Tensor& mask = inputs[a.mask].toTensor();
  if (mask.scalar_type() != at::kBool) return;  // an additive float mask: every score computed
  if (!effective_) {
    basis_.fetch_or(kBasisMaskNotRequested, std::memory_order_relaxed);
    return;
  }
  const int64_t kept = count_true(mask);
  if (kept < 0 || mask.numel() == 0) {
    basis_.fetch_or(kBasisMaskNoData, std::memory_order_relaxed);
    return;
  }
  // A mask broadcasts over [b, h, sq, sk]: its True share is the share of the pairs kept.
  f.attn_kept = kept;
  f.attn_pairs = mask.numel();
  basis_.fetch_or(kBasisMask, std::memory_order_relaxed);
}

// The records nested in an op with a FLOP rule are absorbed: its rule counts them, so all they
// do is cost their callbacks (most of a ViT's records: addmm's, layer norm's, attention's). With
// thread-local callbacks, the session turns its ops callback off on this thread while such an op
// runs, once the op has been seen to nest kMuteFrom records or more: at::disableCallback turns
// off this callback only; every other observer still sees every record, and so do this
// session's callbacks for autograd nodes and named regions (a region opened inside the op, as a
// custom op's Python kernel can, is not lost). In torch 2.13 turning the one-scope callback off
// and on costs ~1,150 instructions (each rebuilds that scope's callback list; ~2,400 for a
// callback of three scopes), a nested record ~1,450 (torch's boxing of its inputs and our
// callbacks): from one nested record on it about breaks even, from two it gains (bench/
// profile_instructions.py measured 1 and 2 alike). Each op is observed again every
// kObserveEvery calls, as its nesting can change with its inputs. Collectives are not muted:
// their backend's work record nests in them.
constexpr int32_t kMuteFrom = 2;
constexpr uint16_t kObserveEvery = 256;

void Session::mute(Frame& f, const ThreadBuffer& tb) {
  const OpInfo& info = *f.info;
  const uint64_t callback = own_callback_.load(std::memory_order_relaxed);
  // Only where every nested record would be absorbed anyway (on_start's owns_children).
  if (callback == 0 || !owns_children(*info.rule) || is_collective(info)) return;
  if (info.calls_until_observed > 0) {
    --info.calls_until_observed;
    if (info.nested >= kMuteFrom) {
      at::disableCallback(callback);
      f.muted = true;
    }
    return;
  }
  f.observed = true;
  f.absorbed0 = tb.absorbed;
}

void Session::unmute(Frame& f, const ThreadBuffer& tb) {
  if (f.muted) {
    f.muted = false;
    // 0: detached while the op ran, and the callback is gone.
    if (const uint64_t callback = own_callback_.load(std::memory_order_relaxed)) {
      at::reenableCallback(callback);
    }
  } else if (f.observed) {
    f.info->nested = static_cast<int32_t>(tb.absorbed - f.absorbed0);
    f.info->calls_until_observed = kObserveEvery;
  }
}

void Session::open_span(Frame& f) {
  if (!f.on_device) return;
  f.outer_span = !f.in_span;
  f.op_span = time_ops_ && !is_view(*f.info);
  if (f.outer_span || f.op_span) {
    f.step = device_->current_step();
    f.mark0 = device_->timeline().mark();  // last: the host work above is not in the span
  }
}

void Session::on_end(const at::RecordFunction& fn, ThreadBuffer& tb) {
  if (fn.scope() == at::RecordScope::USER_SCOPE) {
    on_user_scope(fn, tb, /*start=*/false);
    return;
  }
  const int64_t t1 = host_timing_ ? steady_now_ns() : 0;
  if (tb.depth == 0) return;  // started before this profiler
  Frame& f = tb.stack[--tb.depth];
  compute_ends(f);
  const uint64_t key = record_key(fn);
  if (f.handle != key) {
    // Not the op we expect on top (cannot happen for strictly nested scopes): resynchronise.
    while (tb.depth > 0 && tb.stack[tb.depth].handle != key) {
      --tb.depth;
      compute_ends(tb.stack[tb.depth]);
      if (!tb.stack[tb.depth].absorbed) unmute(tb.stack[tb.depth], tb);
    }
    return;
  }
  if (f.absorbed) return;
  unmute(f, tb);
  const int64_t span = f.outer_span || f.op_span ? close_span(f, tb) : -1;
  if (f.nvtx) nvtx_range_pop();  // also when unwinding: ranges stay balanced
  const int64_t dur_ns = host_timing_ ? t1 - f.t0 : 0;
  // Top-level frames: the thread is busy in ops. A collective's own host time (posting it, a
  // blocking send) is communication, not work: exposed_comm_ns has it.
  if (tb.depth == 0 && !is_collective(*f.info)) tb.busy_ns += dur_ns;
  // The op is ending by an exception (its RecordFunction is being unwound): it did no work.
  if (std::uncaught_exceptions() > 0) return;
  if (f.info->compiled_region && t_counted_graphs == f.counted_graphs) {
    add_cell(tb, f, OpKind::kUnsupported, OpCost::none(), dur_ns, span);  // fused, unseen
  }
  const bool counted = count(fn, f, tb, dur_ns, span);
  if (f.w_numel > 0 && !f.in_op && is_view(*f.info)) weight_view(fn, f, tb);
  if (f.device_comm) {
    const uint64_t cell = CellKey{f.scope, f.info->id, f.phase, false}.pack();
    std::string why;
    std::unique_ptr<DeviceWork> work = device_work(fn.outputs(), why);
    if (!work && span >= 0) {
      // No work: the backend ran it on this stream and made it synchronous there (NCCL with
      // async_op=False), so the op's own span is its time.
      tb.spans[span].comm = true;
      tb.spans[span].cell_key = cell;
      comm_.device_work(cell, nullptr, "");
    } else {
      comm_.device_work(cell, std::move(work), why);
    }
  }
  if (host_timing_) {
    // Coverage: each nanosecond once, to the innermost counted op it was spent in.
    Frame* parent = tb.top();
    if (f.covered >= 0) {
      tb.coverage_ns[f.covered] += dur_ns - f.counted_below_ns;
      if (parent) parent->counted_below_ns += dur_ns;
    } else if (parent) {
      parent->counted_below_ns += f.counted_below_ns;
    }
  }
  if (Frame* parent = tb.top()) {
    // Views and allocations below a memory op (clone -> empty_like) do not take its count.
    parent->child_counted |= (counted && !is_view(*f.info)) || f.child_counted;
    parent->flops_below |= (counted && owns_children(*f.info->rule)) || f.flops_below;
  }
}

// A top-level view of a weight with known zeros (W.t(), W.T, W.view(...)): the op that uses the
// view discounts the weight's zeros as if it used the weight.
void Session::weight_view(const at::RecordFunction& fn, const Frame& f, ThreadBuffer& tb) {
  const auto& outputs = fn.outputs();
  if (outputs.empty() || !outputs[0].isTensor()) return;
  const at::Tensor& v = outputs[0].toTensor();
  if (!v.defined() || !v.has_storage() || v.numel() != f.w_numel) return;
  if (tb.weight_views.size() >= 4096) tb.weight_views.clear();  // stale entries: bounded
  tb.weight_views[v.unsafeGetTensorImpl()] = {f.w_nonzero, f.w_numel,
                                              v.storage().unsafeGetStorageImpl()};
}

int64_t Session::close_span(const Frame& f, ThreadBuffer& tb) {
  const uint32_t mark1 = device_->timeline().mark();
  tb.spans.push_back(
      DeviceSpan{f.mark0, mark1, f.step, f.scope, f.info->id, f.phase, f.outer_span});
  return static_cast<int64_t>(tb.spans.size()) - 1;
}

// Counts the op into its cell; returns whether its rule counted it.
bool Session::count(const at::RecordFunction& fn, Frame& f, ThreadBuffer& tb, int64_t dur_ns,
                    int64_t span) {
  const OpRule* rule = f.info->rule;
  try {
    if (rule && rule->kind == OpKind::kUnsupported) {
      // Known to compute outside ATen with no FLOP rule (LAPACK): listed, whatever the small
      // ATen ops below it counted (they count as themselves, with the bytes they moved).
      add_cell(tb, f, OpKind::kUnsupported, OpCost::none(), dur_ns, span);
      return false;
    }
    if (rule && !f.child_counted) {
      if (rule->kind != OpKind::kView) capture_outputs(fn.outputs(), f.call);
      if (f.call.unknown_shape() && rule->kind != OpKind::kView) {
        // A rule for dense tensors would guess here: listed as unsupported, never a guess.
        add_cell(tb, f, OpKind::kUnsupported, OpCost::none(), dur_ns, span);
        return true;
      }
      OpCost cost;
      try {
        // A registered rule may run ops of its own (Python does): not the model's work, and
        // their callbacks would reuse this frame's slot. Observing is off while it runs.
        std::optional<at::RecordFunctionGuard> off;
        if (rule->fn) off.emplace(/*is_enabled=*/false);
        cost = evaluate(*rule, f.call);
      } catch (const std::exception& e) {
        if (!rule->fn) throw;
        // A registered rule failed: the op is unsupported (its bytes counted), the error kept.
        rule_error(f, e.what());
        add_cell(tb, f, OpKind::kUnsupported,
                 OpCost::bytes(f.call.input_bytes(), f.call.output_bytes()), dur_ns, span);
        return false;
      }
      if (rule->kind == OpKind::kMatmul) apply_effective(fn, f, tb, cost);
      add_cell(tb, f, rule->kind, cost, dur_ns, span);
      return true;
    }
    if (!rule && f.info->is_op && !f.under_rule && !f.flops_below) {
      // No rule and nothing below it counted FLOPs: its work is unknown, so it is listed as
      // unsupported, never a silent zero. A leaf's bytes are counted here; a composite's
      // bytes were counted by its children.
      OpCost cost = OpCost::none();
      if (!f.has_child) {
        capture_outputs(fn.outputs(), f.call);
        cost = OpCost::bytes(f.call.input_bytes(), f.call.output_bytes());
      }
      add_cell(tb, f, OpKind::kUnsupported, cost, dur_ns, span);
    } else if (!rule && f.info->is_op && !f.under_rule && own_kernel(fn, *f.info)) {
      // No rule, and a kernel of its own that ran ATen ops which counted FLOPs. They may be all
      // of its work (the MultiheadAttention fast path) or a small part of it (oneDNN's LSTM
      // adds its biases with aten::add; LAPACK's error check): listed, never taken as counted.
      // The ops below count as themselves. A composite rule marks a kernel whose ops are its
      // work.
      add_cell(tb, f, OpKind::kUnsupported, OpCost::none(), dur_ns, span);
    }
  } catch (const std::exception&) {
  }
  return false;
}

// flops_effective of a matmul-class op: the share of attention scores kept, the share of its
// weight's products that are nonzero (forward only: the weight gradient is dense).
void Session::apply_effective(const at::RecordFunction& fn, const Frame& f, ThreadBuffer& tb,
                              OpCost& cost) {
  int64_t eff = cost.flops_effective >= 0 ? cost.flops_effective : cost.flops;
  if (f.attn_pairs > 0) {
    eff = scaled(eff, f.attn_kept, f.attn_pairs);
    if (f.phase == Phase::kForward && fn.seqNr() >= 0) {
      tb.seq_attention[fn.seqNr()] = {f.attn_kept, f.attn_pairs};
      any_seq_attention_.store(true, std::memory_order_relaxed);
    }
  } else if (t_attn_pairs > 0) {
    // Inside a call whose caller knows the share (flex_attention's block mask, from Python):
    // forward and backward each set it on the thread that runs them.
    eff = scaled(eff, t_attn_kept, t_attn_pairs);
    basis_.fetch_or(kBasisBlockMask, std::memory_order_relaxed);
  }
  if (f.w_numel > 0 && f.phase == Phase::kForward) {
    eff = scaled(eff, f.w_nonzero, f.w_numel);
    if (f.w_nonzero < f.w_numel) basis_.fetch_or(kBasisZeros, std::memory_order_relaxed);
  }
  cost.flops_effective = eff;
}

void Session::rule_error(const Frame& f, const char* what) {
  std::lock_guard<std::mutex> lock(errors_mu_);
  rule_errors_.emplace(f.info->name, what);  // the first error per op
}

// span: the op's entry in tb.spans (-1: none), whose device time goes to this cell later.
inline void Session::add_cell(ThreadBuffer& tb, Frame& f, OpKind kind, const OpCost& cost,
                              int64_t dur_ns, int64_t span) {
  f.covered = coverage_class(kind);
  const uint64_t key = CellKey{f.scope, f.info->id, f.phase, kind == OpKind::kUnsupported}.pack();
  Cell& cell = tb.cells.at(key);
  cell.kind = kind;
  cell.counts.add_op(kind, f.phase, cost);
  if (device_) {
    if (span >= 0 && f.op_span) {
      tb.spans[span].has_cell = true;
      tb.spans[span].cell_key = key;
    }
  } else {
    cell.counts.time_ns += dur_ns;
  }
  if (tracing_) {
    tb.events.push_back(
        RawEvent{f.info->id, f.scope, f.phase, f.t0, dur_ns, cost.flops,
                 std::max<int64_t>(cost.bytes_read, 0) + std::max<int64_t>(cost.bytes_written, 0)});
  }
}

uint32_t Session::backward_scope(uint64_t fwd_thread, int64_t seq) {
  if (seq < 0) return kRootScope;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& buf : buffers_) {
    uint32_t scope;
    if (buf->rf_thread_id == fwd_thread && buf->seq_scopes.find(seq, &scope)) return scope;
  }
  return kRootScope;
}

std::pair<int64_t, int64_t> Session::backward_attention(uint64_t fwd_thread, int64_t seq) {
  if (seq < 0) return {0, 0};
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& buf : buffers_) {
    if (buf->rf_thread_id != fwd_thread) continue;
    auto it = buf->seq_attention.find(seq);
    if (it != buf->seq_attention.end()) return it->second;
  }
  return {0, 0};
}

void Session::resolve_locked(bool wait) {
  std::vector<DeviceSteps::ThreadSpans> threads;
  threads.reserve(buffers_.size());
  for (auto& buf : buffers_) threads.push_back({&buf->spans, &buf->cells});
  device_->resolve(wait, threads);
}

std::vector<DeviceStep> Session::device_steps(bool wait, size_t first) {
  std::lock_guard<std::mutex> lock(mu_);
  resolve_locked(wait);
  return device_->steps(first);
}

void Session::totals(Counts* counts, int64_t* busy_ns, CommTracker::Totals* comm) {
  if (comm_timing_) {
    const int64_t now = steady_now_ns();
    *comm = comm_.totals(now);
    for (const auto& [key, ns] : comm_.times(now)) counts->comm_time_ns += ns;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& buf : buffers_) {
    *busy_ns += buf->busy_ns;
    buf->cells.for_each([&](uint64_t, const Cell& cell) { counts->add(cell.counts); });
  }
}

Report Session::collect(const std::vector<int64_t>& calls,
                        const std::vector<ScopeEvent>& scope_events, bool final) {
  std::vector<std::pair<uint64_t, Cell>> keyed;
  std::vector<int64_t> uses(watched_.size(), 0);
  std::vector<std::pair<uint64_t, RawEvent>> events;
  int64_t busy_ns = 0;
  std::array<int64_t, 3> coverage_ns{};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (device_) resolve_locked(/*wait=*/final);
    size_t n = 0;
    for (auto& buf : buffers_) n += buf->cells.size();
    keyed.reserve(n);
    for (auto& buf : buffers_) {
      busy_ns += buf->busy_ns;
      for (size_t k = 0; k < coverage_ns.size(); ++k) coverage_ns[k] += buf->coverage_ns[k];
      for (const RawEvent& e : buf->events) events.emplace_back(buf->rf_thread_id, e);
      buf->cells.for_each([&](uint64_t key, const Cell& cell) { keyed.emplace_back(key, cell); });
      for (size_t i = 0; i < uses.size(); ++i) uses[i] += buf->watched_uses[i];
    }
    if (device_) {
      for (const RawEvent& e : device_->events()) events.emplace_back(kDeviceTrack, e);
    }
  }
  CommTracker::Totals comm;
  if (tracing_) {  // the backend works, on a track of their own
    for (const CommTracker::Span& w : comm_.spans()) {
      const CellKey k = CellKey::unpack(w.key);
      events.emplace_back(kCommThread,
                          RawEvent{k.op, k.scope, k.phase, w.start_ns, w.dur_ns, 0, 0});
    }
  }
  if (comm_timing_) {
    if (final) comm_.resolve_device(/*wait=*/true);
    const int64_t now = steady_now_ns();
    comm = comm_.totals(now);
    for (const auto& [key, ns] : comm_.times(now)) {  // merged with the collectives' own cells
      Cell cell;
      cell.kind = OpKind::kCollective;
      cell.counts.comm_time_ns = ns;
      keyed.emplace_back(key, cell);
    }
  }
  std::vector<ScopeNode> nodes = scope_nodes();
  Report r = Report::build(merge_cells(std::move(keyed)), nodes, calls,
                           device_ ? &device_->scope_time_ns() : nullptr);
  if (device_) {
    r.clock = device_->timeline().clock();
    r.op_times = time_ops_;
    if (final) r.device_steps = device_->all_steps();  // snapshots: Profiler::device_steps()
    r.wall_ns = device_->wall_ns();
    r.busy_ns = device_->busy_ns();
  } else if (host_timing_) {
    r.clock = "steady_clock";
    r.op_times = true;
    r.wall_ns = steady_now_ns() - start_ns_;
    r.busy_ns = busy_ns;
    r.coverage_ns = coverage_ns;
  }
  const uint32_t basis = basis_.load();
  const std::pair<uint32_t, const char*> names[] = {{kBasisCausal, "causal"},
                                                    {kBasisMask, "mask"},
                                                    {kBasisMaskNoData, "mask:no-data"},
                                                    {kBasisMaskNotRequested, "mask:not-requested"},
                                                    {kBasisZeros, "zeros"},
                                                    {kBasisBlockMask, "block_mask"}};
  for (const auto& [bit, name] : names) {
    if (basis & bit) r.effective_basis.push_back(name);
  }
  {
    std::lock_guard<std::mutex> lock(errors_mu_);
    r.rule_errors = rule_errors_;
  }
  if (tracing_) {
    r.events = assemble_trace(events, scope_events, nodes, start_ns_,
                              at::RecordFunction::currentThreadId());
  }
  if (!watched_.empty()) std::tie(r.params_applied, r.params_touched) = watched_.totals(uses);
  r.start_ns = start_ns_;
  r.exposed_comm_ns = comm.exposed_ns;
  r.peer_wait_ns = comm.peer_wait_ns;
  r.comm_untimed = comm.device_unknown;
  r.comm_untimed_why = comm.device_unknown_why;
  return r;
}

}  // namespace effmetrics
