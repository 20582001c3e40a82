// Capture: an op call as the rules see it (OpCall), copied out of the RecordFunction's IValues:
// the inputs in the start callback (the only place they are valid), the outputs in the end one.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

#include "effmetrics/op_call.h"
#include "process_group.h"

namespace effmetrics {

// Nested, sparse and symbolic-size tensors have no dense shape a rule could use. Inline: every
// tensor of every counted op is asked.
inline bool dense_shape(const at::Tensor& t) {
  const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
  return !impl->is_nested() && !impl->has_symbolic_sizes_strides() &&
         impl->layout() == c10::kStrided;
}
// One tensor argument (in_list: an element of a list argument); an undefined tensor is an
// absent argument, a tensor without a dense shape marks the call unknown_shape().
void capture_tensor(const at::Tensor& t, OpCall& call, bool in_list);

// Records every input in `call`, and shows each defined tensor argument (list elements too) to
// on_tensor and each device argument (factories, copies to a device) to on_device.
template <typename OnTensor, typename OnDevice>
void capture_inputs(c10::ArrayRef<const c10::IValue> inputs, OpCall& call, OnTensor&& on_tensor,
                    OnDevice&& on_device) {
  auto tensor = [&](const at::Tensor& t, bool in_list) {
    capture_tensor(t, call, in_list);
    if (t.defined()) on_tensor(t);
  };
  for (const c10::IValue& v : inputs) {
    if (v.isTensor()) {
      tensor(v.toTensor(), false);
    } else if (v.isTensorList()) {
      call.begin_tensor_list();
      for (const at::Tensor& t : v.toTensorList()) tensor(t, true);
    } else if (v.isInt()) {
      call.add_int(v.toInt());
    } else if (v.isBool()) {
      call.add_bool(v.toBool());
    } else if (v.isDouble()) {
      call.add_double(v.toDouble());
    } else if (v.isIntList()) {
      call.begin_int_list();
      for (const c10::IValue& e : v.toListRef()) call.push_list_int(e.toInt());
    } else if (v.isBoolList()) {
      call.begin_int_list(ArgType::kBoolList);
      for (const c10::IValue& e : v.toListRef()) call.push_list_int(e.toBool() ? 1 : 0);
    } else if (v.isList()) {  // Tensor?[] (aten::index), Tensor[][] (c10d), captured flat
      call.begin_tensor_list();
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) {
          tensor(e.toTensor(), true);
        } else if (e.isTensorList()) {
          for (const at::Tensor& t : e.toTensorList()) tensor(t, true);
        } else {
          call.add_list_tensor(nullptr, nullptr, 0, 0, false);
        }
      }
    } else if (v.isNone()) {
      call.add_none();
    } else if (v.isDevice()) {
      on_device(v.toDevice());
      call.add_other();
    } else if (int group_size = process_group_size(v); group_size > 0) {
      call.add_int(group_size);  // a collective's process group: what its rule needs of it
    } else {
      call.add_other();
    }
  }
}

// The output tensors (tensor lists element by element).
void capture_outputs(const std::vector<c10::IValue>& outputs, OpCall& call);

// An op's NVTX range message: its name and its tensor inputs' shapes, "aten::addmm [576]
// [1, 192] [192, 576]" (tensor lists element by element; "[?]" where sizes cannot be read).
std::string nvtx_op_message(const char* name, c10::ArrayRef<const c10::IValue> inputs);

}  // namespace effmetrics
