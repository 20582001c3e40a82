// Device timing: events on the current stream through c10's device-generic interfaces, so this
// compiles (and fails with a clear message at run time) on CPU-only builds of torch. The one
// place with device-specific code: the benchmark's run timer and the profiler's timeline.
#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <deque>
#include <mutex>
#include <stdexcept>
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
  return std::make_unique<EventTimeline>(dev);
}

}  // namespace effmetrics
