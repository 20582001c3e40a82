// Peak memory of a region, from the allocations ATen's allocators report (the same reports the
// PyTorch profiler's profile_memory reads): bytes allocated minus bytes freed since start(),
// and its maximum. CPU and CUDA are tracked apart. Thread-local like the observer: the starting
// thread and the autograd threads its graph runs on.
#pragma once

#include <cstdint>
#include <memory>

namespace effmetrics {

class MemoryTracker {
 public:
  MemoryTracker();
  ~MemoryTracker();  // stops if running
  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  void start();
  void stop();
  // Highest (allocated - freed) since start(), in bytes; device_type "cpu" or "cuda".
  int64_t peak_bytes(const char* device_type) const;
  int64_t current_bytes(const char* device_type) const;
  // Highest total the allocator itself reported: on CUDA the caching allocator's allocated bytes
  // (absolute, like torch.cuda.max_memory_allocated); on CPU only what was allocated while
  // tracked, so use peak_bytes there.
  int64_t peak_total_bytes(const char* device_type) const;

  struct State;

 private:
  std::shared_ptr<State> state_;
  bool running_ = false;
};

}  // namespace effmetrics
