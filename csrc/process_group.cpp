#include "process_group.h"

#if defined(__has_include)
#if __has_include(<torch/csrc/distributed/c10d/ProcessGroup.hpp>)
#define EFFMETRICS_HAS_C10D 1
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#endif

#include <exception>
#include <utility>

namespace effmetrics {

#ifdef EFFMETRICS_HAS_C10D
namespace {
template <class T>
c10::intrusive_ptr<T> custom_class(const c10::IValue& v) {
  if (!v.isCustomClass()) return {};
  try {
    return v.toCustomClass<T>();
  } catch (const std::exception&) {  // another custom class
    return {};
  }
}

}  // namespace
#endif

int process_group_size(const c10::IValue& v) {
#ifdef EFFMETRICS_HAS_C10D
  auto pg = custom_class<c10d::ProcessGroup>(v);
  return pg ? pg->getSize() : 0;
#else
  (void)v;
  return 0;
#endif
}

#ifdef EFFMETRICS_HAS_C10D
namespace {

class C10dDeviceWork final : public DeviceWork {
 public:
  explicit C10dDeviceWork(c10::intrusive_ptr<c10d::Work> work) : work_(std::move(work)) {}
  bool done() override {
    try {
      return work_->isCompleted();
    } catch (const std::exception&) {  // it failed: done, its time unknown
      return true;
    }
  }
  int64_t elapsed_ns(std::string& why) override {
    try {
      return static_cast<int64_t>(static_cast<double>(work_->getDuration()) * 1e6);  // ms
    } catch (const std::exception& e) {  // no timing on this backend, or it failed
      why = e.what();
      return -1;
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
};

}  // namespace
#endif

bool enable_collective_timing(c10::ArrayRef<const c10::IValue> inputs) {
#ifdef EFFMETRICS_HAS_C10D
  for (const c10::IValue& v : inputs) {
    if (auto pg = custom_class<c10d::ProcessGroup>(v)) {
      try {
        pg->enableCollectivesTiming();
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }
  }
#else
  (void)inputs;
#endif
  return false;
}

std::unique_ptr<DeviceWork> device_work(const std::vector<c10::IValue>& outputs) {
#ifdef EFFMETRICS_HAS_C10D
  for (const c10::IValue& v : outputs) {
    if (v.isTuple()) {
      for (const c10::IValue& e : v.toTupleRef().elements()) {
        if (auto w = custom_class<c10d::Work>(e)) return std::make_unique<C10dDeviceWork>(w);
      }
    } else if (auto w = custom_class<c10d::Work>(v)) {
      return std::make_unique<C10dDeviceWork>(w);
    }
  }
#else
  (void)outputs;
#endif
  return nullptr;
}

}  // namespace effmetrics
