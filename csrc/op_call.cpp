#include "effmetrics/op_call.h"

#include <algorithm>
#include <cstddef>

namespace effmetrics {

void OpCall::add_int_list(const int64_t* v, size_t n, ArgType t) {
  args_.push_back(Arg{t, static_cast<int64_t>(n), 0.0, static_cast<uint32_t>(ints_.size())});
  std::copy_n(v, n, ints_.append(n));
}

void OpCall::add_bool_list(std::initializer_list<bool> v) {
  Arg a{ArgType::kBoolList, static_cast<int64_t>(v.size()), 0.0,
        static_cast<uint32_t>(ints_.size())};
  for (bool b : v) ints_.push_back(b ? 1 : 0);
  args_.push_back(a);
}

void OpCall::add_tensor(std::initializer_list<int64_t> sizes, int itemsize) {
  // Tests: every tensor distinct; use its position as identity.
  const void* id = reinterpret_cast<const void*>(static_cast<uintptr_t>(tensors_.size() + 1));
  add_tensor(id, sizes.begin(), static_cast<int>(sizes.size()), itemsize, true);
}

void OpCall::begin_tensor_list() {
  args_.push_back(Arg{ArgType::kTensorList, 0, 0.0, static_cast<uint32_t>(tensors_.size())});
}

void OpCall::add_output(std::initializer_list<int64_t> sizes, int itemsize) {
  add_output(nullptr, sizes.begin(), static_cast<int>(sizes.size()), itemsize);
}

Shape OpCall::input(int i) const {
  if (type(i) != ArgType::kTensor) return Shape{};
  return shape_of(tensors_[args_[i].offset]);
}

int64_t OpCall::arg_bytes(int i) const {
  int n = arg_tensors(i);
  if (n == 0) return 0;
  int64_t total = 0;
  for (int k = 0; k < n; ++k) {
    const TensorMeta& t = tensors_[args_[i].offset + k];
    if (t.defined) total += t.nbytes();
  }
  return total;
}

int OpCall::arg_tensors(int i) const {
  ArgType t = type(i);
  if (t == ArgType::kTensor) return 1;
  if (t == ArgType::kTensorList) return static_cast<int>(args_[i].i);
  return 0;
}

int64_t OpCall::int_arg(int i, int64_t fallback) const {
  ArgType t = type(i);
  return (t == ArgType::kInt || t == ArgType::kBool) ? args_[i].i : fallback;
}

int64_t OpCall::list_int(int i, int k, int64_t fallback) const {
  ArgType t = type(i);
  if ((t != ArgType::kIntList && t != ArgType::kBoolList) || args_[i].i == 0) return fallback;
  // A one-element list broadcasts over every spatial dim (kernel_size=[3] means 3x3).
  if (k >= args_[i].i) k = static_cast<int>(args_[i].i) - 1;
  return ints_[args_[i].offset + k];
}

double OpCall::double_arg(int i, double fallback) const {
  ArgType t = type(i);
  if (t == ArgType::kDouble) return args_[i].d;
  if (t == ArgType::kInt || t == ArgType::kBool) return static_cast<double>(args_[i].i);
  return fallback;
}

int OpCall::list_size(int i) const {
  ArgType t = type(i);
  bool list = t == ArgType::kTensorList || t == ArgType::kIntList || t == ArgType::kBoolList;
  return list ? static_cast<int>(args_[i].i) : 0;
}

Shape OpCall::list_tensor(int i, int k) const {
  if (type(i) != ArgType::kTensorList || k < 0 || k >= args_[i].i) return Shape{};
  return shape_of(tensors_[args_[i].offset + k]);
}

Shape OpCall::output(int k) const {
  if (k >= num_outputs()) return Shape{};
  return shape_of(outputs_[k]);
}

int64_t OpCall::input_bytes() const {
  int64_t total = 0;
  const TensorMeta* t = tensors_.data();
  for (size_t a = 0, n = tensors_.size(); a < n; ++a) {
    if (!t[a].defined) continue;
    size_t b = 0;
    while (b < a && (t[b].id != t[a].id || t[a].id == nullptr)) ++b;
    if (b == a) total += t[a].nbytes();  // not an earlier argument's tensor
  }
  return total;
}

int64_t OpCall::output_bytes() const {
  int64_t total = 0;
  for (const TensorMeta& t : outputs_) total += t.nbytes();
  return total;
}

}  // namespace effmetrics
