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
// The c10d object a custom-class value holds, when its TorchScript class is `name`. Read from
// the object's capsule: IValue::toCustomClass<T>() looks T up by its C++ typeid, which an
// extension built apart from torch may not share (it failed for c10d::Work on torch 2.11+cu130).
template <class T>
c10::intrusive_ptr<T> custom_class(const c10::IValue& v, const char* name) {
  if (!v.isObject()) return {};
  const auto& obj = v.toObjectRef();
  const auto cls = obj.type()->name();
  if (!cls || cls->qualifiedName() != name || obj.slots().size() != 1) return {};
  const c10::IValue& slot = obj.getSlot(0);
  if (!slot.isCapsule()) return {};
  return c10::static_intrusive_pointer_cast<T>(slot.toCapsule());
}

constexpr const char* kProcessGroupClass = "__torch__.torch.classes.c10d.ProcessGroup";
constexpr const char* kWorkClass = "__torch__.torch.classes.c10d.Work";

}  // namespace
#endif

int process_group_size(const c10::IValue& v) {
#ifdef EFFMETRICS_HAS_C10D
  auto pg = custom_class<c10d::ProcessGroup>(v, kProcessGroupClass);
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
    if (auto pg = custom_class<c10d::ProcessGroup>(v, kProcessGroupClass)) {
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

std::unique_ptr<DeviceWork> device_work(const std::vector<c10::IValue>& outputs, std::string& why) {
#ifdef EFFMETRICS_HAS_C10D
  for (const c10::IValue& v : outputs) {
    if (v.isTuple()) {
      for (const c10::IValue& e : v.toTupleRef().elements()) {
        if (auto w = custom_class<c10d::Work>(e, kWorkClass))
          return std::make_unique<C10dDeviceWork>(w);
      }
    } else if (auto w = custom_class<c10d::Work>(v, kWorkClass)) {
      return std::make_unique<C10dDeviceWork>(w);
    }
  }
  for (const c10::IValue& v : outputs) {
    if (v.isObject() && v.type()->str() == kWorkClass) {
      why =
          "a synchronous collective (its c10d Work is empty: NCCL with async_op=False runs it on "
          "the current stream); its time is its own device span, which needs a profile timed on "
          "that device (time=True with device='cuda')";
      return nullptr;
    }
  }
  why = "the collective returned no c10d Work (its outputs:";
  for (const c10::IValue& v : outputs) {
    why += " " + (v.isObject() ? v.type()->str() : std::string(v.tagKind()));
  }
  why += ")";
#else
  (void)outputs;
  why = "this torch has no c10d";
#endif
  return nullptr;
}

}  // namespace effmetrics
