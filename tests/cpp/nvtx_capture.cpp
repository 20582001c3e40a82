// A test NVTX injection library: what Nsight Systems would be, minus the GUI. Loaded by NVTX
// through NVTX_INJECTION64_PATH, it appends one line per range event of the "effmetrics"
// domain to the file named by EFFMETRICS_NVTX_CAPTURE: "push <message>" or "pop".
#include <nvtx3/nvToolsExt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace {

std::mutex g_mu;
FILE* g_out = nullptr;
// Domain handles are ours to mint: the address of this marker is the effmetrics domain.
char g_effmetrics_domain;
char g_other_domain;

void write_line(const char* what, const char* message) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_out) return;
  std::fprintf(g_out, "%s%s%s\n", what, message ? " " : "", message ? message : "");
  std::fflush(g_out);
}

nvtxDomainHandle_t domain_create(const char* name) {
  void* handle = std::strcmp(name, "effmetrics") == 0 ? &g_effmetrics_domain : &g_other_domain;
  return static_cast<nvtxDomainHandle_t>(handle);
}

int range_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t* attr) {
  if (static_cast<void*>(domain) != &g_effmetrics_domain) return 0;
  const char* message =
      attr && attr->messageType == NVTX_MESSAGE_TYPE_ASCII ? attr->message.ascii : "?";
  write_line("push", message);
  return 0;
}

int range_pop(nvtxDomainHandle_t domain) {
  if (static_cast<void*>(domain) != &g_effmetrics_domain) return 0;
  write_line("pop", nullptr);
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_export_table) {
  const char* path = std::getenv("EFFMETRICS_NVTX_CAPTURE");
  if (!path) return 0;
  g_out = std::fopen(path, "a");
  if (!g_out) return 0;
  auto* callbacks =
      static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size)) {
    return 0;
  }
  *table[NVTX_CBID_CORE2_DomainCreateA] = reinterpret_cast<NvtxFunctionPointer>(domain_create);
  *table[NVTX_CBID_CORE2_DomainRangePushEx] = reinterpret_cast<NvtxFunctionPointer>(range_push);
  *table[NVTX_CBID_CORE2_DomainRangePop] = reinterpret_cast<NvtxFunctionPointer>(range_pop);
  return 1;
}
