// Emits effmetrics NVTX ranges for the NVTX test: module scopes and ops, then an op that throws
// inside two scopes. Run with NVTX_INJECTION64_PATH set to the capture library.
#include <ATen/ATen.h>

#include <cstdio>

#include "effmetrics/effmetrics.h"

int main() {
  auto a = at::ones({4, 4}), bad = at::ones({3, 5});
  effmetrics::ProfilerOptions options;
  options.nvtx = true;
  options.nvtx_ops = true;
  effmetrics::Profiler prof(options);
  {
    effmetrics::ScopeGuard encoder("encoder");
    effmetrics::ScopeGuard layer("encoder.layer");
    at::mm(a, a);
  }
  try {
    effmetrics::ScopeGuard block("block");
    at::mm(a, bad);  // throws inside the op: its range and the scope's must still close
  } catch (const c10::Error&) {
    std::puts("caught");
  }
  prof.stop();
  {
    effmetrics::ScopeGuard after("after_stop");  // ranges only while enabled
    at::mm(a, a);
  }
  return 0;
}
