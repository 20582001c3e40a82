// effmetrics::Profiler: options, the callback slots and the start/snapshot/stop lifecycle. What
// the callbacks do with each op is the Session's (session.cpp).
#include "effmetrics/profiler.h"

#include <ATen/record_function.h>

#include <array>
#include <stdexcept>

#include "effmetrics/nvtx.h"
#include "session.h"

namespace effmetrics {

ProfilerOptions ProfilerOptions::resolved() const {
  ProfilerOptions r = *this;
  r.time = time || time_ops || trace;
  r.nvtx = nvtx || nvtx_ops;
  if (!r.time) {
    r.device.clear();
    r.timeline.reset();
  }
  r.time_ops = time_ops && r.device_timeline();
  return r;
}

namespace {

// Callbacks are plain function pointers with no user data, so each active profiler takes one of
// kMaxProfilers slots, and slot S registers on_start<S>/on_end<S>.
std::array<std::atomic<Session*>, Profiler::kMaxProfilers> g_slots{};
std::mutex g_slots_mu;

struct ThreadSlots {
  std::array<uint64_t, Profiler::kMaxProfilers> generation{};
  std::array<ThreadBuffer*, Profiler::kMaxProfilers> buffer{};
};
thread_local ThreadSlots t_slots;

template <int S>
ThreadBuffer* buffer_for(Session* s, const at::RecordFunction& fn) {
  if (ThreadBuffer* first = s->first_buffer(fn.threadId(), pthread_self())) return first;
  if (t_slots.generation[S] != s->generation()) {
    t_slots.buffer[S] = s->register_thread();
    t_slots.generation[S] = s->generation();
  }
  return t_slots.buffer[S];
}

template <int S>
std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  Session* s = g_slots[S].load(std::memory_order_acquire);
  if (s) s->on_start(fn, *buffer_for<S>(s, fn));
  return nullptr;
}

template <int S>
void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  Session* s = g_slots[S].load(std::memory_order_acquire);
  if (s) s->on_end(fn, *buffer_for<S>(s, fn));
}

template <int... S>
constexpr auto make_callbacks(std::integer_sequence<int, S...>) {
  return std::array<
      std::pair<at::RecordFunctionCallback::StartCallback, at::RecordFunctionCallback::EndCallback>,
      sizeof...(S)>{{{on_start<S>, on_end<S>}...}};
}
const auto kCallbacks = make_callbacks(std::make_integer_sequence<int, Profiler::kMaxProfilers>{});

// Module calls on this thread since `start`.
std::vector<int64_t> calls_since(const std::vector<int64_t>& start) {
  std::vector<int64_t> diff = scope_calls_snapshot();
  for (size_t k = 0; k < diff.size() && k < start.size(); ++k) diff[k] -= start[k];
  return diff;
}

}  // namespace

Profiler::Profiler(ProfilerOptions options, bool start_now) : options_(options.resolved()) {
  if (options_.timeline) {
    timeline_ = options_.timeline;
  } else if (options_.device_timeline()) {
    timeline_ = make_device_timeline(options_.device);  // kept across runs: its event pool
  }
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

std::string Profiler::clock() const {
  if (!options_.time) return "";
  return timeline_ ? timeline_->clock() : "steady_clock";
}

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
  auto session = std::make_unique<Session>(slot, options_, timeline_);
  for (const Watched& w : pending_watch_) session->watch(w.impl, w.numel, w.nonzero);
  pending_watch_.clear();
  g_slots[slot].store(session.get(), std::memory_order_release);
  owner_ = std::this_thread::get_id();
  if (options_.nvtx) nvtx_acquire();
  calls_at_start_ = scope_calls_snapshot();
  scope_events_.clear();
  if (options_.trace) set_scope_event_sink(&scope_events_);
  session_ = std::move(session);
  add_callbacks();
  if (session_->has_timeline()) session_->open_step();
}

// Three callbacks, one per kind of record, each asking only for what the session reads of it:
// - ops (FUNCTION): inputs and outputs (the rules). The one Session::mute turns off on this
//   thread while an op whose rule counts its subtree runs; toggling a callback rebuilds the
//   lists of the scopes it has, so this one has one scope.
// - autograd nodes (BACKWARD_FUNCTION): neither (their seqNr and forward thread name their
//   forward op), so torch does not box each node's inputs.
// - named regions (USER_SCOPE): inputs (a process-group backend's work record names its tensors:
//   the collectives' times; the other regions are NVTX ranges with nvtx on). Never muted: a
//   region opened inside a muted op (a custom op's Python kernel) is still seen.
void Profiler::add_callbacks() {
  const auto [start, end] = kCallbacks[session_->slot()];
  auto add = [&](at::RecordScope scope, bool inputs, bool outputs) {
    at::RecordFunctionCallback cb(start, end);
    cb.needsInputs(inputs).needsOutputs(outputs).scopes({scope});
    return options_.all_threads ? at::addGlobalCallback(cb) : at::addThreadLocalCallback(cb);
  };
  callback_handles_ = {add(at::RecordScope::FUNCTION, true, true),
                       add(at::RecordScope::BACKWARD_FUNCTION, false, false),
                       add(at::RecordScope::USER_SCOPE, true, false)};
  // A global callback is never muted: turning it off would turn it off for every thread.
  session_->set_own_callback(options_.all_threads ? 0 : callback_handles_[0]);
  attached_ = true;
}

void Profiler::remove_callbacks() {
  session_->set_own_callback(0);
  for (uint64_t handle : callback_handles_) at::removeCallback(handle);
  attached_ = false;
}

void Profiler::check_owner(const char* what) const {
  if (!options_.all_threads && owner_ != std::this_thread::get_id()) {
    throw std::runtime_error(std::string("effmetrics: ") + what +
                             " a thread-local Profiler on the thread that started it "
                             "(or construct it with ProfilerOptions{.all_threads = true})");
  }
}

void Profiler::detach() {
  if (!running()) throw std::runtime_error("effmetrics: detach() needs a running Profiler");
  check_owner("detach");
  if (attached_) remove_callbacks();
}

void Profiler::attach() {
  if (!running()) throw std::runtime_error("effmetrics: attach() needs a running Profiler");
  check_owner("attach");
  if (!attached_) add_callbacks();
}

Profiler::Totals Profiler::totals() {
  if (!running()) throw std::runtime_error("effmetrics: totals() needs a running Profiler");
  Totals t;
  CommTracker::Totals comm;
  session_->totals(&t.counts, &t.busy_ns, &comm);
  t.exposed_comm_ns = comm.exposed_ns;
  t.peer_wait_ns = comm.peer_wait_ns;
  return t;
}

void Profiler::mark_step() {
  if (!running()) throw std::runtime_error("effmetrics: mark_step() needs a running Profiler");
  if (!session_->has_timeline()) return;
  session_->close_step();
  session_->open_step();
}

Report Profiler::snapshot() {
  if (!running()) throw std::runtime_error("effmetrics: snapshot() needs a running Profiler");
  if (!session_->has_timeline())
    return session_->collect(calls_since(calls_at_start_), scope_events_, false);
  session_->close_step();
  Report r = session_->collect(calls_since(calls_at_start_), scope_events_, false);
  session_->open_step();
  return r;
}

std::vector<DeviceStep> Profiler::device_steps(bool wait, size_t first) {
  if (!running()) throw std::runtime_error("effmetrics: device_steps() needs a running Profiler");
  if (!session_->has_timeline()) {
    throw std::runtime_error(
        "effmetrics: device_steps() needs a device timeline (ProfilerOptions::device)");
  }
  return session_->device_steps(wait, first);
}

Report Profiler::stop() {
  if (!running()) throw std::runtime_error("effmetrics: stop() on a Profiler that is not running");
  check_owner("stop");
  if (session_->has_timeline()) session_->close_step();
  {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    if (attached_) remove_callbacks();
    g_slots[session_->slot()].store(nullptr, std::memory_order_release);
  }
  if (options_.trace) set_scope_event_sink(nullptr);
  if (options_.nvtx) nvtx_release();
  Report r = session_->collect(calls_since(calls_at_start_), scope_events_, true);
  session_.reset();
  return r;
}

void Profiler::set_phase(Phase phase) {
  if (!running()) throw std::runtime_error("effmetrics: set_phase() needs a running Profiler");
  session_->set_phase(phase);
}

void Profiler::pause() {
  if (!running()) throw std::runtime_error("effmetrics: pause() needs a running Profiler");
  session_->pause();
}

void Profiler::resume() {
  if (!running()) throw std::runtime_error("effmetrics: resume() needs a running Profiler");
  session_->resume();
}

void Profiler::watch(const void* tensor_impl, int64_t numel, int64_t nonzero) {
  if (running()) {
    throw std::runtime_error("effmetrics: watch() parameters before start()");
  }
  pending_watch_.push_back(Watched{tensor_impl, numel, nonzero});
}

namespace {
std::unique_ptr<at::ObserverContext> empty_start(const at::RecordFunction&) { return nullptr; }
void empty_end(const at::RecordFunction&, at::ObserverContext*) {}
}  // namespace

EmptyObserver::EmptyObserver() {
  at::RecordFunctionCallback cb(empty_start, empty_end);
  cb.needsInputs(true).needsOutputs(true).scopes(
      {at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION});
  handle_ = at::addThreadLocalCallback(cb);
}

EmptyObserver::~EmptyObserver() { at::removeCallback(handle_); }

}  // namespace effmetrics
