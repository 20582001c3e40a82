#include "effmetrics/params.h"

#include <c10/core/TensorImpl.h>

#include <unordered_map>

namespace effmetrics {
namespace {

bool same_view(const c10::TensorImpl* a, const c10::TensorImpl* b) {
  return a == b || (a->storage_offset() == b->storage_offset() && a->sizes() == b->sizes() &&
                    a->strides() == b->strides());
}

}  // namespace

TensorFacts tensor_facts(const std::vector<const c10::TensorImpl*>& tensors) {
  const size_t n = tensors.size();
  TensorFacts f;
  f.first.resize(n);
  f.numel.resize(n);
  f.requires_grad.resize(n);
  f.scalar_type.resize(n);
  // Storage (or, without one, the tensor itself) -> the group leaders seen on it.
  std::unordered_map<const void*, std::vector<size_t>> leaders;
  leaders.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const c10::TensorImpl* t = tensors[i];
    f.numel[i] = t->numel();
    f.requires_grad[i] = t->requires_grad();
    f.scalar_type[i] = static_cast<int>(t->dtype().toScalarType());
    f.first[i] = static_cast<int64_t>(i);
    const void* key = t->has_storage()
                          ? static_cast<const void*>(t->storage().unsafeGetStorageImpl())
                          : static_cast<const void*>(t);
    std::vector<size_t>& seen = leaders[key];
    for (size_t j : seen) {
      if (same_view(tensors[j], t)) {
        f.first[i] = static_cast<int64_t>(j);
        break;
      }
    }
    if (f.first[i] == static_cast<int64_t>(i)) seen.push_back(i);
  }
  return f;
}

}  // namespace effmetrics
