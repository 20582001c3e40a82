#include "effmetrics/memory.h"

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <atomic>
#include <cstring>
#include <stdexcept>

namespace effmetrics {

struct MemoryTracker::State : public c10::MemoryReportingInfoBase {
  static void raise_to(std::atomic<int64_t>& peak, int64_t value) {
    int64_t seen = peak.load();
    while (value > seen && !peak.compare_exchange_weak(seen, value)) {
    }
  }
  struct Counter {
    std::atomic<int64_t> current{0};
    std::atomic<int64_t> peak{0};
    std::atomic<int64_t> peak_total{0};  // the allocator's own total (absolute on CUDA)
    void add(int64_t bytes, size_t total_allocated) {
      raise_to(peak, current.fetch_add(bytes) + bytes);
      raise_to(peak_total, static_cast<int64_t>(total_allocated));
    }
  };
  Counter cpu, cuda;

  void reportMemoryUsage(void*, int64_t alloc_size, size_t total_allocated, size_t,
                         c10::Device device) override {
    if (device.is_cpu()) {
      cpu.add(alloc_size, total_allocated);
    } else if (device.is_cuda()) {
      cuda.add(alloc_size, total_allocated);
    }
  }
  bool memoryProfilingEnabled() const override { return true; }

  const Counter& of(const char* device_type) const {
    if (std::strcmp(device_type, "cpu") == 0) return cpu;
    if (std::strcmp(device_type, "cuda") == 0) return cuda;
    throw std::invalid_argument(
        std::string("MemoryTracker: device type must be 'cpu' or 'cuda'; got '") + device_type +
        "'");
  }
};

MemoryTracker::MemoryTracker() = default;

MemoryTracker::~MemoryTracker() {
  if (running_) stop();
}

void MemoryTracker::start() {
  if (running_) throw std::runtime_error("MemoryTracker: already started");
  state_ = std::make_shared<State>();
  // PROFILER_STATE is where ATen's allocators look for a memory reporter (as the PyTorch
  // profiler's profile_memory does); ours shadows it while running.
  c10::ThreadLocalDebugInfo::_push(c10::DebugInfoKind::PROFILER_STATE, state_);
  running_ = true;
}

void MemoryTracker::stop() {
  if (!running_) throw std::runtime_error("MemoryTracker: stop() without start()");
  c10::ThreadLocalDebugInfo::_pop(c10::DebugInfoKind::PROFILER_STATE);
  running_ = false;
}

int64_t MemoryTracker::peak_bytes(const char* device_type) const {
  return state_ ? state_->of(device_type).peak.load() : 0;
}

int64_t MemoryTracker::peak_total_bytes(const char* device_type) const {
  return state_ ? state_->of(device_type).peak_total.load() : 0;
}

int64_t MemoryTracker::current_bytes(const char* device_type) const {
  return state_ ? state_->of(device_type).current.load() : 0;
}

}  // namespace effmetrics
