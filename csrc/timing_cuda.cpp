// Device timing: events on the current stream through c10's device-generic interfaces, so this
// compiles (and fails with a clear message at run time) on CPU-only builds of torch. The one
// place with device-specific code: the benchmark's run timer and the profiler's timeline, whose
// CUDA marks are raw events recorded with the CUDA runtime's own calls, found at run time in the
// libcudart torch loaded (no CUDA headers or toolkit needed to build).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "effmetrics/timing.h"

namespace effmetrics {
namespace {

std::string event_clock(c10::DeviceType type) {  // "cuda_event"
  return c10::DeviceTypeName(type, /*lower_case=*/true) + "_event";
}

// Deferred: each run is bracketed by a pair of events and read in drain(), so runs are queued
// back to back and the GPU never waits for the host between them.
class DeviceEventTimer final : public RunTimer {
 public:
  DeviceEventTimer(c10::Device device, bool l2_flush)
      : device_(device), impl_(c10::impl::getDeviceGuardImpl(device.type())) {
    if (l2_flush) {
      // 256 MiB: several times the L2 of any current GPU (H100/H200: 50 MiB).
      flush_ = at::empty({256 << 20}, at::TensorOptions().dtype(at::kByte).device(device));
    }
  }
  void before_run() override {
    if (flush_.defined()) flush_.zero_();
  }
  void start() override {
    if (pending_ == starts_.size()) {
      starts_.emplace_back(device_.type(), c10::EventFlag::BACKEND_DEFAULT);
      ends_.emplace_back(device_.type(), c10::EventFlag::BACKEND_DEFAULT);
    }
    starts_[pending_].record(impl_->getStream(device_));
  }
  double stop() override {
    ends_[pending_++].record(impl_->getStream(device_));
    return -1.0;
  }
  bool deferred() const override { return true; }
  std::vector<double> drain() override {
    std::vector<double> times;
    if (pending_ == 0) return times;
    ends_[pending_ - 1].synchronize();  // one stream: every earlier event is done too
    for (size_t i = 0; i < pending_; ++i) {
      ends_[i].synchronize();  // (the run may have switched streams)
      times.push_back(starts_[i].elapsedTime(ends_[i]) / 1e3);  // milliseconds -> seconds
    }
    pending_ = 0;
    return times;
  }
  std::string clock() const override { return event_clock(device_.type()); }

 private:
  c10::Device device_;
  const c10::impl::DeviceGuardImplInterface* impl_;
  std::deque<c10::Event> starts_, ends_;  // a pair per pending run, reused after drain()
  size_t pending_ = 0;
  at::Tensor flush_;
};

// Marks are timing events from a pool (created on first use, recorded again once released),
// recorded on the device's current stream of the calling thread.
class EventTimeline final : public DeviceTimeline {
 public:
  explicit EventTimeline(c10::Device device)
      : device_(device), impl_(c10::impl::getDeviceGuardImpl(device.type())) {}
  int8_t device_type() const override { return static_cast<int8_t>(device_.type()); }
  int8_t device_index() const override { return device_.index(); }
  std::string clock() const override { return event_clock(device_.type()); }
  uint32_t mark() override {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {
      id = static_cast<uint32_t>(events_.size());
      events_.emplace_back(device_.type(), c10::EventFlag::BACKEND_DEFAULT);
    }
    events_[id].record(impl_->getStream(device_));
    return id;
  }
  bool done(uint32_t m) override { return event(m).query(); }
  void wait(uint32_t m) override { event(m).synchronize(); }
  int64_t elapsed_ns(uint32_t from, uint32_t to) override {
    // cudaEventElapsedTime: milliseconds as a float, about 0.5 us resolution.
    return static_cast<int64_t>(event(from).elapsedTime(event(to)) * 1e6);
  }
  void release(uint32_t m) override {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(m);
  }

 private:
  c10::Event& event(uint32_t m) {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.at(m);  // a deque: references stay valid as it grows
  }
  c10::Device device_;
  const c10::impl::DeviceGuardImplInterface* impl_;
  std::mutex mu_;
  std::deque<c10::Event> events_;
  std::vector<uint32_t> free_;
};

// Marks are raw events from a pool, recorded with `calls` (the CUDA runtime's, or a test's): per
// mark a pool pop under the lock and one record call on the device's current stream. The device
// is switched only to create an event, or to record while another device is current (a null
// stream handle is the current device's default stream).
class RawEventTimeline final : public DeviceTimeline {
 public:
  RawEventTimeline(c10::Device device, const EventCalls& calls)
      : device_(device), impl_(c10::impl::getDeviceGuardImpl(device.type())), calls_(calls) {
    if (!calls.create || !calls.destroy || !calls.record || !calls.query || !calls.synchronize ||
        !calls.elapsed_ms || !calls.clear_error || !calls.current_stream) {
      throw std::invalid_argument("effmetrics: EventCalls needs every call but error_string");
    }
  }
  ~RawEventTimeline() override {
    for (void* e : events_) {
      if (calls_.destroy(e) != 0) calls_.clear_error();  // at exit the context may be gone
    }
  }
  int8_t device_type() const override { return static_cast<int8_t>(device_.type()); }
  int8_t device_index() const override { return device_.index(); }
  std::string clock() const override { return event_clock(device_.type()); }
  uint32_t mark() override {
    void* stream = calls_.current_stream(device_.index());
    uint32_t id;
    void* e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        id = free_.back();
        free_.pop_back();
        e = events_[id];
      } else {
        c10::DeviceGuard on(device_);
        check(calls_.create(&e), "create");
        id = static_cast<uint32_t>(events_.size());
        events_.push_back(e);
      }
    }
    if (impl_->getDevice().index() == device_.index()) {
      check(calls_.record(e, stream), "record");
    } else {
      c10::DeviceGuard on(device_);
      check(calls_.record(e, stream), "record");
    }
    return id;
  }
  bool done(uint32_t m) override {
    const int status = calls_.query(event(m));
    if (status == calls_.not_ready) {
      calls_.clear_error();  // not an error, but the runtime keeps it as the last one
      return false;
    }
    check(status, "query");
    return true;
  }
  void wait(uint32_t m) override { check(calls_.synchronize(event(m)), "synchronize"); }
  int64_t elapsed_ns(uint32_t from, uint32_t to) override {
    float ms = 0;  // cudaEventElapsedTime: milliseconds as a float, about 0.5 us resolution
    check(calls_.elapsed_ms(&ms, event(from), event(to)), "elapsed time");
    return static_cast<int64_t>(static_cast<double>(ms) * 1e6);
  }
  void release(uint32_t m) override {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(m);
  }

 private:
  void* event(uint32_t m) {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.at(m);
  }
  void check(int status, const char* what) const {
    if (status == 0) return;
    calls_.clear_error();
    throw std::runtime_error(std::string("effmetrics: ") + calls_.name + " event " + what +
                             " failed on " + device_.str() + ": " +
                             (calls_.error_string ? calls_.error_string(status) : "error") +
                             " (code " + std::to_string(status) + ")");
  }
  c10::Device device_;
  const c10::impl::DeviceGuardImplInterface* impl_;
  const EventCalls calls_;
  std::mutex mu_;
  std::vector<void*> events_;
  std::vector<uint32_t> free_;
};

// c10::Stream::native_handle() (a CUDA stream's cudaStream_t), where this torch has it.
template <typename S, typename = void>
struct HasNativeHandle : std::false_type {};
template <typename S>
struct HasNativeHandle<S, std::void_t<decltype(std::declval<const S&>().native_handle())>>
    : std::true_type {};
template <typename S>
void* native_stream(const S& s) {
  if constexpr (HasNativeHandle<S>::value) {
    return s.native_handle();
  } else {
    return nullptr;  // unused: resolve_cudart() gives up first
  }
}

void* cuda_current_stream(int8_t index) {
  static const c10::impl::DeviceGuardImplInterface* impl =
      c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  return native_stream(impl->getStream(c10::Device(c10::DeviceType::CUDA, index)));
}

// A library already loaded into this process whose file name starts with `prefix`, opened
// again by its path without loading anything; null when there is none.
void* loaded_library(const char* prefix) {
  struct Search {
    const char* prefix;
    void* handle;
  } search{prefix, nullptr};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        const char* path = info->dlpi_name;
        const char* base = path ? std::strrchr(path, '/') : nullptr;
        base = base ? base + 1 : path;
        if (base == nullptr || std::strncmp(base, s->prefix, std::strlen(s->prefix)) != 0) return 0;
        s->handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        return s->handle != nullptr;
      },
      &search);
  return search.handle;
}

// The CUDA runtime's calls as torch's own CUDA code (libc10_cuda) resolves them: dlsym on its
// handle searches it and then its dependencies, so this is the libcudart torch links against
// (or torch's own copy, were it linked in and exported), never another one some other library
// loaded; a runtime linked in and hidden gives nothing (then c10::Event).
EventCalls resolve_cudart() {
  EventCalls calls;
  void* lib = loaded_library("libc10_cuda.so");
  if (lib == nullptr || !HasNativeHandle<c10::Stream>::value) return calls;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    return fn != nullptr;
  };
  // cudaError_t is an int-sized enum, cudaEvent_t and cudaStream_t are pointers.
  const bool all = sym(calls.create, "cudaEventCreate") && sym(calls.destroy, "cudaEventDestroy") &&
                   sym(calls.record, "cudaEventRecord") && sym(calls.query, "cudaEventQuery") &&
                   sym(calls.synchronize, "cudaEventSynchronize") &&
                   sym(calls.elapsed_ms, "cudaEventElapsedTime") &&
                   sym(calls.clear_error, "cudaGetLastError") &&
                   sym(calls.error_string, "cudaGetErrorString");
  if (!all) calls.create = nullptr;
  calls.current_stream = cuda_current_stream;
  return calls;
}

bool c10_events_asked() {
  const char* v = std::getenv("EFFMETRICS_EVENTS");
  return v != nullptr && std::strcmp(v, "c10") == 0;
}

c10::Device available_device(const std::string& device, const char* who) {
  c10::Device dev = [&] {
    try {
      return c10::Device(device);
    } catch (const std::exception&) {
      throw std::invalid_argument(std::string(who) + ": unknown device '" + device +
                                  "'; use 'cpu' or 'cuda[:i]'");
    }
  }();
  const int count = c10::impl::hasDeviceGuardImpl(dev.type())
                        ? c10::impl::getDeviceGuardImpl(dev.type())->deviceCount()
                        : 0;
  if (count == 0 || (dev.has_index() && dev.index() >= count)) {
    throw std::invalid_argument(std::string(who) + ": device '" + device +
                                "' is not available on this machine (" + std::to_string(count) +
                                " such device(s)); use device='cpu'");
  }
  if (!dev.has_index()) dev = c10::Device(dev.type(), 0);
  return dev;
}

}  // namespace

std::unique_ptr<RunTimer> make_device_timer(const std::string& device, bool l2_flush) {
  return std::make_unique<DeviceEventTimer>(available_device(device, "effmetrics::benchmark"),
                                            l2_flush);
}

std::unique_ptr<DeviceTimeline> make_device_timeline(const std::string& device) {
  c10::Device dev = available_device(device, "effmetrics::Profiler");
  if (dev.is_cpu()) return make_host_timeline(static_cast<int8_t>(c10::DeviceType::CPU));
  if (device_event_calls(device) == "cudart") {
    return std::make_unique<RawEventTimeline>(dev, *cudart_event_calls());
  }
  return std::make_unique<EventTimeline>(dev);
}

std::unique_ptr<DeviceTimeline> make_event_timeline(const std::string& device,
                                                    const EventCalls& calls) {
  return std::make_unique<RawEventTimeline>(available_device(device, "effmetrics::Profiler"),
                                            calls);
}

const EventCalls* cudart_event_calls() {
  static const EventCalls calls = resolve_cudart();
  return calls.create != nullptr ? &calls : nullptr;
}

std::string device_event_calls(const std::string& device) {
  const bool cuda = device.rfind("cuda", 0) == 0;
  return cuda && !c10_events_asked() && cudart_event_calls() != nullptr ? "cudart" : "c10";
}

}  // namespace effmetrics
