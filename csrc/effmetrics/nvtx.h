// NVTX ranges in the "effmetrics" domain: module scopes (scope.cpp), ops (the observer, when
// asked) and steps (Python's Counter). Without a tool attached (Nsight Systems, or any library
// named by NVTX_INJECTION64_PATH) every call is a no-op inside NVTX; while no user has enabled
// ranges, each is one relaxed atomic load here.
#pragma once

namespace effmetrics {

// Ranges are emitted while at least one user holds them enabled.
void nvtx_acquire();
void nvtx_release();
bool nvtx_enabled();

void nvtx_range_push(const char* message);
void nvtx_range_pop();

// RAII: acquire for a scope.
class NvtxEnabled {
 public:
  NvtxEnabled() { nvtx_acquire(); }
  ~NvtxEnabled() { nvtx_release(); }
  NvtxEnabled(const NvtxEnabled&) = delete;
  NvtxEnabled& operator=(const NvtxEnabled&) = delete;
};

}  // namespace effmetrics
