// Facts about a model's parameters, read off their TensorImpls in one pass. profile() scans the
// model before every pass; reading each parameter's storage, shape, strides, numel and
// requires_grad as Python attributes was most of that scan's cost.
#pragma once

#include <cstdint>
#include <vector>

namespace c10 {
struct TensorImpl;
}

namespace effmetrics {

struct TensorFacts {
  // first[i]: index of the first tensor in the list that views the same memory the same way
  // (same storage, storage offset, sizes and strides) as tensor i; i itself when none does. A
  // tensor listed twice (tied weights) and two Parameter objects over one storage both group.
  // Tensors without a storage (wrapper subclasses) group only with themselves.
  std::vector<int64_t> first;
  std::vector<int64_t> numel;
  std::vector<char> requires_grad;
  std::vector<int> scalar_type;  // c10::ScalarType's value (OpCall's TensorMeta::scalar_type)
};

// The tensors must stay alive during the call; the list may repeat a tensor.
TensorFacts tensor_facts(const std::vector<const c10::TensorImpl*>& tensors);

}  // namespace effmetrics
