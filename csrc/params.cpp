#include "effmetrics/params.h"

#include <c10/core/TensorImpl.h>

#include <algorithm>
#include <utility>

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
  // (storage, or the tensor itself without one; index), sorted: the tensors on one storage are
  // neighbours, in list order. No allocation per tensor (a map of vectors was most of the cost).
  std::vector<std::pair<const void*, size_t>> by_storage(n);
  for (size_t i = 0; i < n; ++i) {
    const c10::TensorImpl* t = tensors[i];
    f.numel[i] = t->numel();
    f.requires_grad[i] = t->requires_grad();
    f.scalar_type[i] = static_cast<int>(t->dtype().toScalarType());
    f.first[i] = static_cast<int64_t>(i);
    by_storage[i] = {t->has_storage()
                         ? static_cast<const void*>(t->storage().unsafeGetStorageImpl())
                         : static_cast<const void*>(t),
                     i};
  }
  std::sort(by_storage.begin(), by_storage.end());
  for (size_t a = 0; a < n;) {
    size_t b = a + 1;
    while (b < n && by_storage[b].first == by_storage[a].first) ++b;
    // A group of one storage, in list order: each tensor takes the first earlier one viewing it
    // the same way (a group's first: an earlier equal view would have matched before it).
    for (size_t x = a + 1; x < b; ++x) {
      const size_t i = by_storage[x].second;
      for (size_t y = a; y < x; ++y) {
        const size_t j = by_storage[y].second;
        if (same_view(tensors[j], tensors[i])) {
          f.first[i] = static_cast<int64_t>(j);
          break;
        }
      }
    }
    a = b;
  }
  return f;
}

}  // namespace effmetrics
