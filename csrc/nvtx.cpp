#include "effmetrics/nvtx.h"

#include <nvtx3/nvToolsExt.h>

#include <atomic>

namespace effmetrics {
namespace {

std::atomic<int> g_users{0};

nvtxDomainHandle_t domain() {
  static nvtxDomainHandle_t d = nvtxDomainCreateA("effmetrics");
  return d;
}

}  // namespace

void nvtx_acquire() { g_users.fetch_add(1, std::memory_order_relaxed); }
void nvtx_release() { g_users.fetch_sub(1, std::memory_order_relaxed); }
bool nvtx_enabled() { return g_users.load(std::memory_order_relaxed) > 0; }

void nvtx_range_push(const char* message) {
  nvtxEventAttributes_t attr = {};
  attr.version = NVTX_VERSION;
  attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attr.message.ascii = message;
  nvtxDomainRangePushEx(domain(), &attr);
}

void nvtx_range_pop() { nvtxDomainRangePop(domain()); }

}  // namespace effmetrics
