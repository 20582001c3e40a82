#include "process_group.h"

#if defined(__has_include)
#if __has_include(<torch/csrc/distributed/c10d/ProcessGroup.hpp>)
#define EFFMETRICS_HAS_C10D 1
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#endif

#include <exception>

namespace effmetrics {

int process_group_size(const c10::IValue& v) {
#ifdef EFFMETRICS_HAS_C10D
  if (!v.isCustomClass()) return 0;
  try {
    return v.toCustomClass<c10d::ProcessGroup>()->getSize();
  } catch (const std::exception&) {  // another custom class
    return 0;
  }
#else
  (void)v;
  return 0;
#endif
}

}  // namespace effmetrics
