#include "capture.h"

#include <optional>

namespace effmetrics {

void capture_tensor(const at::Tensor& t, OpCall& call, bool in_list) {
  if (!t.defined()) {
    in_list ? call.add_list_tensor(nullptr, nullptr, 0, 0, false) : call.add_none();
    return;
  }
  const void* id = t.unsafeGetTensorImpl();
  if (!dense_shape(t)) {
    call.set_unknown_shape();
    in_list ? call.add_list_tensor(id, nullptr, 0, 0, false) : call.add_other();
    return;
  }
  auto sizes = t.sizes();
  int itemsize = static_cast<int>(t.dtype().itemsize());
  int ndim = static_cast<int>(sizes.size());
  int scalar_type = static_cast<int>(t.scalar_type());
  if (in_list) {
    call.add_list_tensor(id, sizes.data(), ndim, itemsize, true, scalar_type);
  } else {
    call.add_tensor(id, sizes.data(), ndim, itemsize, true, scalar_type);
  }
}

namespace {
void add_output(const at::Tensor& t, OpCall& call) {
  if (!t.defined()) return;
  if (!dense_shape(t)) {
    call.set_unknown_shape();
    return;
  }
  auto sizes = t.sizes();
  call.add_output(t.unsafeGetTensorImpl(), sizes.data(), static_cast<int>(sizes.size()),
                  static_cast<int>(t.dtype().itemsize()), static_cast<int>(t.scalar_type()));
}
}  // namespace

void capture_outputs(const std::vector<c10::IValue>& outputs, OpCall& call) {
  for (const c10::IValue& v : outputs) {
    if (v.isTensor()) {
      add_output(v.toTensor(), call);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) add_output(t, call);
    }
  }
}

std::string nvtx_op_message(const char* name, c10::ArrayRef<const c10::IValue> inputs) {
  std::string msg = name;
  auto add = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    if (!dense_shape(t)) {
      msg += " [?]";
      return;
    }
    msg += " [";
    const auto sizes = t.sizes();
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (i) msg += ", ";
      msg += std::to_string(sizes[i]);
    }
    msg += "]";
  };
  for (const c10::IValue& v : inputs) {
    if (v.isTensor()) {
      add(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList().vec()) add(t);
    } else if (v.isOptionalTensorList()) {
      for (std::optional<at::Tensor> t : v.toOptionalTensorList()) {
        if (t.has_value()) add(*t);
      }
    }
  }
  return msg;
}

}  // namespace effmetrics
