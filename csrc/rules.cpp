// The op rule table. Each family is one small pure function of the call's shapes; the table at
// the bottom maps op names to families. The README's "Counting conventions" documents each one.
#include "effmetrics/rules.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace effmetrics {
namespace {

// ---------------------------------------------------------------- argument positions
// Where a family finds its operands, named after the schemas they come from (positional
// arguments, as RecordFunction hands them over).
namespace args {
// mm(self, mat2), bmm(self, mat2), mv(self, vec), dot(self, tensor)
struct Mm {
  static constexpr int kA = 0, kB = 1;
};
// addmm(self, mat1, mat2, ...), baddbmm/addbmm(self, batch1, batch2, ...), addmv(self, mat, vec):
// self is the added term
struct Addmm {
  static constexpr int kA = 1, kB = 2;
};
// convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
constexpr int kConvTransposed = 6;
// convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation,
//                      transposed, output_padding, groups, output_mask)
struct ConvolutionBackward {
  static constexpr int kTransposed = 7, kOutputMask = 10;
};
// convolution_backward_overrideable(grad_out, input, weight, stride, padding, dilation,
//                                   transposed, output_padding, groups, output_mask)
struct ConvolutionBackwardOverrideable {
  static constexpr int kTransposed = 6, kOutputMask = 9;
};
// native_batch_norm / _native_batch_norm_legit / cudnn_batch_norm(input, weight, bias,
// running_mean, running_var, training, momentum, eps)
constexpr int kBatchNormTraining = 5;
// *_backward(grad_output, self, ...): the forward input comes second
constexpr int kSelf = 0, kBackwardSelf = 1;
// max_pool/avg_pool(self, kernel_size, ...); avg_pool*_backward(grad_output, self, kernel_size)
constexpr int kPoolKernel = 1, kPoolBackwardKernel = 2;
// topk(self, k, dim, largest, sorted)
constexpr int kTopkK = 1;
// native_dropout(input, p, train)
constexpr int kDropoutTrain = 2;
// nll_loss_forward(self, target, weight, reduction, ignore_index)
constexpr int kLossTarget = 1;
// histc(self, bins, min, max)
constexpr int kHistcMin = 2, kHistcMax = 3;
// The sorted tensor of a binary search: searchsorted(sorted_sequence, self, ...),
// bucketize(self, boundaries, ...)
constexpr int kSearchsortedSorted = 0, kBucketizeSorted = 1;
// unique_dim(self, dim, sorted, return_inverse, return_counts)
constexpr int kUniqueDim = 1;
// isin(elements, test_elements, assume_unique, invert); either may be a scalar
constexpr int kIsinElements = 0, kIsinTest = 1, kIsinAssumeUnique = 2;
// _cudnn_rnn_backward(input, weight[], weight_stride0, weight_buf, hx, cx, output, grad_output,
//   grad_hy, grad_cy, mode, hidden_size, proj_size, num_layers, batch_first, dropout, train,
//   bidirectional, batch_sizes, dropout_state, reserve, output_mask[input, hx, cx, weight])
constexpr int kCudnnRnnBackwardMask = 21;
// embedding(weight, indices), index_select(self, dim, index), gather(self, dim, index),
// index(self, indices[]), take(self, index): the gathered-from tensor
constexpr int kGatherSource = 0;

// Whether a scatter accumulates into self (1 FLOP per value) or overwrites it.
enum class Accumulate { kByFlag, kAlways, kNever };
// index_put(self, indices[], values, accumulate), _index_put_impl(..., accumulate, unsafe)
struct IndexPut {
  static constexpr int kValues = 2, kFlag = 3;
  static constexpr Accumulate kMode = Accumulate::kByFlag;
};
// index_add(self, dim, index, source, alpha), scatter_add(self, dim, index, src),
// scatter_reduce(self, dim, index, src, reduce, ...), index_reduce(self, dim, index, source, ...)
struct ScatterAdd {
  static constexpr int kValues = 3, kFlag = -1;
  static constexpr Accumulate kMode = Accumulate::kAlways;
};
// scatter(self, dim, index, src | value)
struct Scatter {
  static constexpr int kValues = 3, kFlag = -1;
  static constexpr Accumulate kMode = Accumulate::kNever;
};
}  // namespace args

// Attention tensor layouts: [batch, heads, seq, dim] (the SDPA kernels) or [batch, seq, heads,
// dim] (_flash_attention_*, _efficient_attention_*).
enum class Layout { kBHSD, kBSHD };

// ---------------------------------------------------------------- matmul class
// [m,k] @ [k,n]: m*k*n MACs. Bias and alpha/beta scaling are not counted.
template <typename Args>
OpCost mm_family(const OpCall& c) {
  Shape a = c.input(Args::kA), b = c.input(Args::kB);
  if (a.ndim != 2 || b.ndim != 2) return OpCost::generic_bytes();
  return OpCost::matmul(a[0] * a[1] * b[1]);
}

// [bt,m,k] @ [bt,k,n]: bt*m*k*n MACs (bmm, baddbmm, addbmm).
template <typename Args>
OpCost bmm_family(const OpCall& c) {
  Shape a = c.input(Args::kA), b = c.input(Args::kB);
  if (a.ndim != 3 || b.ndim != 3) return OpCost::generic_bytes();
  return OpCost::matmul(a[0] * a[1] * a[2] * b[2]);
}

// _grouped_mm(a, b, offs, ...) and _scaled_grouped_mm(a, b, scale_a, scale_b, offs, ...): G
// matmuls in one kernel (transformers' MoE experts), the groups cut at offs along one dim.
// a [M, K] @ b [G, K, N] (rows cut): M*K*N; a [M, K] @ b [K, N] (K cut: a weight gradient):
// M*K*N; a [G, M, K] @ b [K, N] (columns cut): M*K*N; 3-D @ 3-D: a bmm. Rows or columns past
// the last offset are counted (the offsets' values are not read).
OpCost grouped_mm(const OpCall& c) {
  Shape a = c.input(0), b = c.input(1);
  if (a.ndim < 2 || a.ndim > 3 || b.ndim < 2 || b.ndim > 3) return OpCost::generic_bytes();
  if (a.ndim == 3 && b.ndim == 2) return OpCost::matmul(a[1] * a[2] * b[1]);
  return OpCost::matmul(a.numel * b[b.ndim - 1]);
}

// A matmul whose weight is packed (int8/int4 weight-only, quantized::linear's packed params):
// [.., K] @ W -> [.., N], read off the input and the output: numel(output) * K MACs.
OpCost packed_matmul(const OpCall& c) {
  Shape x = c.input(0);
  if (x.ndim < 1 || c.num_outputs() < 1) return OpCost::generic_bytes();
  return OpCost::matmul(c.output_numel(0) * x[x.ndim - 1]);
}

// [m,n] @ [n]: m*n MACs (mv, addmv); [n].[n]: n MACs (dot, vdot).
template <typename Args>
OpCost mv_family(const OpCall& c) {
  return OpCost::matmul(c.input(Args::kA).numel);
}

// N * prod(weight) * prod(spatial), spatial = output's (input's when transposed).
// prod(weight) already divides by groups (weight is [Cout, Cin/g, k...] or [Cin, Cout/g, k...]).
int64_t conv_macs(const Shape& x, const Shape& w, const Shape& out, bool transposed) {
  const Shape& sp = transposed ? x : out;
  if (x.ndim < 3 || w.ndim < 3 || sp.ndim < 3) return 0;
  return x[0] * w.numel * sp.prod(2, sp.ndim);
}

OpCost convolution(const OpCall& c) {
  return OpCost::matmul(
      conv_macs(c.input(0), c.input(1), c.output(0), c.int_arg(args::kConvTransposed, 0) != 0));
}

// convolution_backward: grad_input and grad_weight, as output_mask asks, each cost one forward
// convolution (exact, groups included); the bias gradient, like the forward bias, is not counted.
template <typename Args>
OpCost convolution_backward(const OpCall& c) {
  Shape grad_out = c.input(0), x = c.input(1), w = c.input(2);
  bool transposed = c.int_arg(Args::kTransposed, 0) != 0;
  int64_t fwd = conv_macs(x, w, grad_out, transposed);
  int64_t macs = 0;
  if (c.list_int(Args::kOutputMask, 0, 1)) macs += fwd;
  if (c.list_int(Args::kOutputMask, 1, 1)) macs += fwd;
  return OpCost::matmul(macs);
}

// Recurrent layers as one kernel each: oneDNN's mkldnn_rnn_layer (an LSTM on CPU; one layer and
// direction a call: input, w_ih, w_hh, ...) and cuDNN's _cudnn_rnn (every layer and direction:
// input, weight[], ...). Their work is the gate matmuls: every row of the sequence (numel(input)
// / in: T*B rows, or sum(batch_sizes) packed) times every 2-D weight (w_ih [G*H, in], w_hh
// [G*H, H], a projection's w_hr [P, H]; G = 4 LSTM, 3 GRU, 1 RNN). The gates' elementwise work
// is not counted (as a matmul's fused activation). Without the rule the kernel's small ATen ops
// (the biases added) made it look counted: an LSTM on CPU counted 256 of its 286,720 FLOPs.
int64_t rnn_macs(const Shape& input, const Shape& w_ih, int64_t weights) {
  if (w_ih.ndim != 2 || w_ih[1] <= 0) return -1;
  return input.numel / w_ih[1] * weights;
}

OpCost mkldnn_rnn_layer(const OpCall& c) {
  Shape w_ih = c.input(1), w_hh = c.input(2);
  const int64_t macs = rnn_macs(c.input(0), w_ih, w_ih.numel + (w_hh.ndim == 2 ? w_hh.numel : 0));
  return macs < 0 ? OpCost::generic_bytes() : OpCost::matmul(macs);
}

// Its backward: the gradients of the input (and of the recurrent state) and of the weights,
// each the forward's matmuls again.
OpCost mkldnn_rnn_layer_backward(const OpCall& c) {
  OpCost fwd = mkldnn_rnn_layer(c);
  return fwd.macs > 0 ? OpCost::matmul(2 * fwd.macs) : fwd;
}

int64_t cudnn_rnn_macs(const OpCall& c) {
  const int n = c.list_size(1);
  if (n == 0) return -1;
  int64_t weights = 0;
  for (int k = 0; k < n; ++k) {
    Shape w = c.list_tensor(1, k);
    if (w.ndim == 2) weights += w.numel;
  }
  return rnn_macs(c.input(0), c.list_tensor(1, 0), weights);
}

OpCost cudnn_rnn(const OpCall& c) {
  const int64_t macs = cudnn_rnn_macs(c);
  return macs < 0 ? OpCost::generic_bytes() : OpCost::matmul(macs);
}

// output_mask [input, hx, cx, weight]: the data gradients always (the recurrence runs through
// them), the weight gradients where asked.
OpCost cudnn_rnn_backward(const OpCall& c) {
  const int64_t macs = cudnn_rnn_macs(c);
  if (macs < 0) return OpCost::generic_bytes();
  return OpCost::matmul(macs * (1 + (c.list_int(args::kCudnnRnnBackwardMask, 3, 1) != 0)));
}

// SDPA: q [b, hq, sq, dq], k [b, hkv, sk, dq], v [b, hkv, sk, dv] (Layout::kBHSD) or
// [b, s, h, d] (Layout::kBSHD). Forward: QK^T and AV, b*hq*sq*sk*(dq+dv) MACs.
// Backward: recompute QK^T, dP = dO V^T, dV, dQ, dK: b*hq*sq*sk*(3dq+2dv) MACs (2.5x forward
// when dq == dv). Causal masking is not discounted in flops (as FlopCounterMode); the observer
// discounts it in flops_effective (find_attention, causal_kept_pairs).
struct AttnDims {
  int64_t b = 0, hq = 0, sq = 0, sk = 0, dq = 0, dv = 0;
};
template <Layout L>
AttnDims attn_dims(const Shape& q, const Shape& k, const Shape& v) {
  constexpr bool BSHD = L == Layout::kBSHD;
  AttnDims d;
  if (q.ndim != 4 || k.ndim != 4 || v.ndim != 4) return d;
  d.b = q[0];
  d.hq = BSHD ? q[2] : q[1];
  d.sq = BSHD ? q[1] : q[2];
  d.sk = BSHD ? k[1] : k[2];
  d.dq = q[3];
  d.dv = v[3];
  return d;
}
template <Layout L>
OpCost sdpa_forward(const OpCall& c) {  // (query, key, value, ...)
  AttnDims d = attn_dims<L>(c.input(0), c.input(1), c.input(2));
  return OpCost::matmul(d.b * d.hq * d.sq * d.sk * (d.dq + d.dv));
}
template <Layout L>
OpCost sdpa_backward(const OpCall& c) {  // (grad_out, query, key, value, ...)
  AttnDims d = attn_dims<L>(c.input(1), c.input(2), c.input(3));
  return OpCost::matmul(d.b * d.hq * d.sq * d.sk * (3 * d.dq + 2 * d.dv));
}

// ---------------------------------------------------------------- vector class
// N FLOPs per output element (elementwise, activations, comparisons).
template <int N>
OpCost per_output(const OpCall& c) {
  return OpCost::vector(N * c.output_numel(0));
}
// N FLOPs per element of input Input (reductions read every element once).
template <int N, int Input = args::kSelf>
OpCost per_input(const OpCall& c) {
  return OpCost::vector(N * c.input(Input).numel);
}

// Normalisation: 5 FLOPs/element to standardise (mean, centre, square, sum, scale), plus one per
// element for each of weight and bias when given. Backward: twice the forward.
int64_t norm_flops(const Shape& x, bool weight, bool bias, int stats) {
  return x.numel * (stats + (weight ? 1 : 0) + (bias ? 1 : 0));
}
// native_layer_norm(input, normalized_shape, weight, bias, eps)
OpCost layer_norm(const OpCall& c) {
  return OpCost::vector(norm_flops(c.input(0), c.is_tensor(2), c.is_tensor(3), 5));
}
// native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, mask)
OpCost layer_norm_backward(const OpCall& c) {
  return OpCost::vector(2 * norm_flops(c.input(1), c.is_tensor(5), c.is_tensor(6), 5));
}
// native_group_norm(input, weight, bias, N, C, HxW, group, eps)
OpCost group_norm(const OpCall& c) {
  return OpCost::vector(norm_flops(c.input(0), c.is_tensor(1), c.is_tensor(2), 5));
}
// native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, mask)
OpCost group_norm_backward(const OpCall& c) {
  return OpCost::vector(2 * norm_flops(c.input(1), c.is_tensor(4), c.is_tensor(4), 5));
}
// RMSNorm: 3 FLOPs/element (square, sum, scale) + 1 for the weight.
// _fused_rms_norm(input, normalized_shape, weight, eps) / rms_norm(input, shape, weight, eps)
OpCost rms_norm(const OpCall& c) {
  return OpCost::vector(norm_flops(c.input(0), c.is_tensor(2), false, 3));
}
// _fused_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight, output_mask)
OpCost rms_norm_backward(const OpCall& c) {
  return OpCost::vector(2 * norm_flops(c.input(1), c.is_tensor(4), false, 3));
}
// Batch norm: training computes statistics (5/element); eval applies running stats (2/element:
// centre, scale).
int64_t batch_norm_flops(const OpCall& c, bool training) {
  return norm_flops(c.input(0), c.is_tensor(1), c.is_tensor(2), training ? 5 : 2);
}
OpCost batch_norm(const OpCall& c) {
  return OpCost::vector(batch_norm_flops(c, c.int_arg(args::kBatchNormTraining, 1) != 0));
}
// _native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, ...)
OpCost batch_norm_eval(const OpCall& c) { return OpCost::vector(batch_norm_flops(c, false)); }
// native_batch_norm_backward(grad_out, input, weight, ...): twice the training forward.
OpCost batch_norm_backward(const OpCall& c) {
  return OpCost::vector(2 * norm_flops(c.input(1), c.is_tensor(2), c.is_tensor(2), 5));
}

// Pooling over a window: prod(kernel) FLOPs per output element.
// Spatial: the window's dims.
template <int Spatial>
OpCost window_pool(const OpCall& c) {
  int64_t window = 1;
  for (int k = 0; k < Spatial; ++k) window *= c.list_int(args::kPoolKernel, k, 1);
  return OpCost::vector(c.output_numel(0) * window);
}
// avg_pool backward: prod(kernel) per grad element.
template <int Spatial>
OpCost window_pool_backward(const OpCall& c) {
  int64_t window = 1;
  for (int k = 0; k < Spatial; ++k) window *= c.list_int(args::kPoolBackwardKernel, k, 1);
  return OpCost::vector(c.input(0).numel * window);
}

// Interpolation: nearest moves data (0 FLOPs); linear family 2*taps-1 per output element
// (taps = 2, 4, 8 for 1d/2d/3d; 16 for bicubic). Backward: the same per grad element.
template <int Taps>
OpCost interpolate(const OpCall& c) {
  return OpCost::vector((2 * Taps - 1) * c.output_numel(0));
}
template <int Taps>
OpCost interpolate_backward(const OpCall& c) {
  return OpCost::vector((2 * Taps - 1) * c.input(0).numel);
}

// grid_sampler_2d/3d(input, grid, interpolation_mode, ...): interpolation at each output element
// (N*C*spatial): bilinear/trilinear (mode 0) 4 or 8 taps, nearest (1) none, bicubic (2, 2-D
// only) 16; as interpolate: 2*taps - 1 per output element. The grid's unnormalization is not
// counted. Backward (grad_output first, output_mask [input, grid]): the same per gradient
// element for each gradient asked for.
template <int LinearTaps>
int64_t grid_taps(const OpCall& c, int mode_arg) {
  switch (c.int_arg(mode_arg, 0)) {
    case 0:
      return LinearTaps;
    case 2:
      return 16;
    default:
      return 0;
  }
}
template <int LinearTaps>
OpCost grid_sampler(const OpCall& c) {
  const int64_t taps = grid_taps<LinearTaps>(c, 2);
  return OpCost::vector(taps > 0 ? (2 * taps - 1) * c.output_numel(0) : 0);
}
template <int LinearTaps>
OpCost grid_sampler_backward(const OpCall& c) {
  const int64_t taps = grid_taps<LinearTaps>(c, 3);
  const int64_t grads = (c.list_int(6, 0, 1) != 0) + (c.list_int(6, 1, 1) != 0);
  return OpCost::vector(taps > 0 ? (2 * taps - 1) * c.input(0).numel * grads : 0);
}

// _cdist_forward(x1 [B, P, M], x2 [B, R, M], p, compute_mode): per pair and coordinate a
// difference, a power (a square for p = 2) and an add; a root per pair. (For larger inputs and
// p = 2 torch computes it through a matmul instead: counted there.) _cdist_backward(grad, x1,
// x2, p, cdist): per pair and coordinate the gradient's 4 (difference, scale, multiply, add).
OpCost cdist(const OpCall& c) {
  Shape a = c.input(0), b = c.input(1);
  if (a.ndim < 2 || b.ndim < 2) return OpCost::generic_bytes();
  const int64_t pairs = c.output_numel(0);
  return OpCost::vector(pairs * (3 * a[a.ndim - 1] + 1));
}
OpCost cdist_backward(const OpCall& c) {
  Shape a = c.input(1);
  if (a.ndim < 2) return OpCost::generic_bytes();
  return OpCost::vector(4 * c.input(0).numel * a[a.ndim - 1]);
}

// topk: one pass with a heap of k: numel * ceil(log2(k+1)) comparisons.
int64_t ceil_log2(int64_t n) {
  int64_t r = 0;
  while ((int64_t{1} << r) < n) ++r;
  return std::max<int64_t>(r, 1);
}
OpCost topk(const OpCall& c) {
  return OpCost::vector(c.input(0).numel * ceil_log2(c.int_arg(args::kTopkK, 1) + 1));
}
// Sorting x along dim: n log2 n comparisons per row of n (a dim out of range: one row of all).
int64_t sort_flops(const Shape& x, int64_t dim) {
  if (x.ndim == 0) return 0;
  if (dim < 0) dim += x.ndim;
  const int64_t n = (dim >= 0 && dim < x.ndim) ? x[static_cast<int>(dim)] : x.numel;
  return x.numel * ceil_log2(n);
}
// What torch's unique does with k elements: the sort, then a compare of each with its neighbour.
int64_t sort_unique_flops(int64_t k) { return k * ceil_log2(k) + k; }
// sort(self, dim, descending) / sort.stable(self, stable, dim, descending).
OpCost sort(const OpCall& c) {
  const int64_t dim = c.type(1) == ArgType::kInt ? c.int_arg(1, -1) : c.int_arg(2, -1);
  return OpCost::vector(sort_flops(c.input(0), dim));
}

// histc: per element the bin index (x - lo) * bins / (hi - lo) and the count into it; with
// min == max (the default 0, 0) the range is the data's, found first (a min and a max).
OpCost histc(const OpCall& c) {
  const int64_t n = c.input(0).numel;
  const bool data_range = c.double_arg(args::kHistcMin, 0) == c.double_arg(args::kHistcMax, 0);
  return OpCost::vector(4 * n + (data_range ? 2 * n : 0));
}
// searchsorted / bucketize: a binary search per value (output element) over the m sorted
// values of its row: ceil(log2(m + 1)) comparisons.
template <int Sorted>
OpCost binary_search(const OpCall& c) {
  Shape sorted = c.input(Sorted);
  const int64_t m = sorted.ndim > 0 ? sorted[sorted.ndim - 1] : 1;
  return OpCost::vector(c.output_numel(0) * ceil_log2(m + 1));
}
// unique (torch sorts, CPU and CUDA): the sort and a compare per element with its neighbour;
// unique_dim sorts the slices along dim. unique_consecutive: the compares only.
OpCost unique(const OpCall& c) { return OpCost::vector(sort_unique_flops(c.input(0).numel)); }
OpCost unique_dim(const OpCall& c) {
  Shape x = c.input(0);
  if (x.ndim == 0) return OpCost::vector(0);
  return OpCost::vector(sort_flops(x, c.int_arg(args::kUniqueDim, 0)) + x.numel);
}
// isin: torch's own choice of algorithm (numpy's heuristic). Few test elements (m below
// 10 * n^0.145): each element against each test element, n * m comparisons at most. Else a
// sort: unique of each side (unless assume_unique), the sort of the n + m values together and
// a compare of neighbours.
OpCost isin(const OpCall& c) {
  if (!c.is_tensor(args::kIsinElements) && !c.is_tensor(args::kIsinTest)) {
    return OpCost::vector(0);
  }
  auto numel = [&](int i) { return c.is_tensor(i) ? c.input(i).numel : int64_t{1}; };
  const int64_t n = numel(args::kIsinElements), m = numel(args::kIsinTest);
  if (n == 0) return OpCost::vector(0);
  if (m < static_cast<int64_t>(10.0 * std::pow(static_cast<double>(n), 0.145))) {
    return OpCost::vector(n * m);
  }
  const bool assume_unique = c.int_arg(args::kIsinAssumeUnique, 0) != 0;
  return OpCost::vector(sort_unique_flops(n + m) +
                        (assume_unique ? 0 : sort_unique_flops(n) + sort_unique_flops(m)));
}

// ---------------------------------------------------------------- direct linear algebra
// The leading-order FLOP counts of Golub & Van Loan (Matrix Computations, 4th ed.), as LAPACK's
// operation counts (LAWN 41) have them, per matrix times the batch: the factorizations and
// solves run in LAPACK/cuSOLVER, outside ATen. The iterative ones (SVD, eigen) are listed.
struct MatrixDims {
  int64_t batch = 0, m = 0, n = 0;  // batch == 0: not a matrix
};
MatrixDims matrix_dims(const Shape& a) {
  if (a.ndim < 2 || a[-2] <= 0 || a[-1] <= 0) return {};
  return {a.numel / (a[-2] * a[-1]), a[-2], a[-1]};
}
// Cholesky of [n, n]: n^3 / 3.
OpCost cholesky(const OpCall& c) {
  const MatrixDims d = matrix_dims(c.input(0));
  return OpCost::vector(d.batch * (d.n * d.n * d.n / 3));
}
// LU with partial pivoting of [m, n]: k^2 * l - k^3 / 3 (k = min(m, n), l = max): 2n^3 / 3.
OpCost lu_factor(const OpCall& c) {
  const MatrixDims d = matrix_dims(c.input(0));
  const int64_t k = std::min(d.m, d.n), l = std::max(d.m, d.n);
  return OpCost::vector(d.batch * (k * k * l - k * k * k / 3));
}
// Householder QR of [m, n]: 2 k^2 (l - k / 3); forming Q [m, q] from its k reflectors:
// 4 m q k - 2 (m + q) k^2 + 4 k^3 / 3 (q = Q's columns, read off the output: k reduced, m
// complete, none in mode "r").
OpCost qr(const OpCall& c) {
  const MatrixDims d = matrix_dims(c.input(0));
  const int64_t k = std::min(d.m, d.n), l = std::max(d.m, d.n);
  int64_t flops = 2 * k * k * l - 2 * k * k * k / 3;
  Shape q_out = c.output(0);
  const int64_t q = q_out.ndim >= 2 && q_out.numel > 0 ? q_out[-1] : 0;
  if (q > 0) flops += 4 * d.m * q * k - 2 * (d.m + q) * k * k + 4 * k * k * k / 3;
  return OpCost::vector(d.batch * flops);
}
// A solve with a factored [n, n] matrix (input Factor), per right-hand side: one triangular
// solve n^2 (Triangles = 1), or two (LU, Cholesky: 2). Right-hand sides: numel(solution) / n.
template <int Factor, int Triangles>
OpCost factored_solve(const OpCall& c) {
  const MatrixDims d = matrix_dims(c.input(Factor));
  if (d.batch == 0 || c.num_outputs() < 1) return OpCost::generic_bytes();
  return OpCost::vector(Triangles * d.n * c.output_numel(0));
}

// nll_loss: gather + sum per target.
OpCost per_target(const OpCall& c) { return OpCost::vector(c.input(args::kLossTarget).numel); }

// _embedding_bag(weight, indices, offsets, ...): each gathered row is added once.
OpCost embedding_bag(const OpCall& c) {
  Shape w = c.input(0), idx = c.input(1);
  int64_t dim = w.ndim == 2 ? w[1] : 0;
  OpCost cost = OpCost::vector(idx.numel * dim);
  cost.bytes_read = idx.nbytes() + idx.numel * dim * w.itemsize;
  return cost;
}

// _transform_bias_rescale_qkv(qkv, qkv_bias, num_heads): add the bias to q, k, v, scale q.
OpCost transform_bias_rescale_qkv(const OpCall& c) {
  int64_t n = c.input(0).numel;
  return OpCost::vector(n + n / 3);
}

// _native_batch_norm_legit etc. are above; dropout: compare + scale per element when training.
OpCost native_dropout(const OpCall& c) {
  bool train =
      c.type(args::kDropoutTrain) == ArgType::kBool ? c.int_arg(args::kDropoutTrain, 1) != 0 : true;
  return OpCost::vector(train ? 2 * c.input(0).numel : 0);
}

// Fused optimizer steps, one op for every parameter: the elementwise work torch's single-tensor
// and foreach paths do op by op, per element of the parameters (arg 0, a list).
int64_t list_numel(const OpCall& c, int i) {
  int64_t n = 0;
  for (int k = 0; k < c.list_size(i); ++k) n += c.list_tensor(i, k).numel;
  return n;
}

// The _foreach_ ops (optimizers' foreach path, the default on CUDA, and clip_grad_norm_): one
// kernel for a list of tensors on CUDA, where no ATen op runs below it (on CPU it runs the
// single-tensor op per tensor). K FLOPs per element of the list (arg 0), as the single-tensor
// op counts.
template <int K>
OpCost per_list_element(const OpCall& c) {
  OpCost cost = OpCost::vector(K * list_numel(c, 0));
  if (c.num_outputs() == 0) cost.bytes_written = c.arg_bytes(0);  // in place: its list written
  return cost;
}

// _fused_adam_/_fused_adamw_(self[], grads[], exp_avgs[], exp_avg_sqs[], max_exp_avg_sqs[],
// state_steps[], lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, grad_scale, found_inf):
// lerp (2), mul + addcmul (3), sqrt, divide, add eps (3), addcdiv (2); weight decay 1 (a mul of
// the parameter, or an add to the gradient), amsgrad's maximum 1, maximize's negation 1. The
// unscaling by grad_scale is not counted (the foreach path does it in GradScaler's own op).
// Written in place: the parameters, both moments, and the max with amsgrad.
OpCost fused_adam(const OpCall& c) {
  const bool amsgrad = c.int_arg(11, 0) != 0;
  const int64_t per = 10 + (c.double_arg(9, 0.0) != 0.0) + amsgrad + (c.int_arg(12, 0) != 0);
  OpCost cost = OpCost::vector(per * list_numel(c, 0));
  cost.bytes_written =
      c.arg_bytes(0) + c.arg_bytes(2) + c.arg_bytes(3) + (amsgrad ? c.arg_bytes(4) : 0);
  return cost;
}

// _fused_sgd_(self[], grads[], momentum_buffer_list[], weight_decay, momentum, lr, dampening,
// nesterov, maximize, is_first_step, ...): the update (1); weight decay 1; momentum 2 (mul,
// add; none on the first step, which copies the gradient), nesterov 1; maximize's negation 1.
OpCost fused_sgd(const OpCall& c) {
  const bool momentum = c.double_arg(4, 0.0) != 0.0;
  const int64_t per = 1 + (c.double_arg(3, 0.0) != 0.0) +
                      (momentum && c.int_arg(9, 0) == 0 ? 2 : 0) +
                      (momentum && c.int_arg(7, 0) != 0) + (c.int_arg(8, 0) != 0);
  OpCost cost = OpCost::vector(per * list_numel(c, 0));
  cost.bytes_written = c.arg_bytes(0) + (momentum ? c.arg_bytes(2) : 0);  // in place
  return cost;
}

// FFTs (_fft_r2c, _fft_c2c, _fft_c2r: self, dim[], normalization, ...): FFTW's benchmark
// convention, 5 N log2 N for a complex transform of N points (N the product of the transformed
// sizes), half that for a real one (r2c, and c2r whose real size is last_dim_size), times the
// transforms in the batch. The normalization's scaling is not counted.
template <int TenthsPerPoint, bool RealOutput>
OpCost fft(const OpCall& c) {
  Shape x = c.input(0);
  const int dims = c.list_size(1);
  if (x.ndim == 0 || dims == 0) return OpCost::generic_bytes();
  int64_t n = 1, last = 0;  // transformed points of self; the last transformed size
  for (int k = 0; k < dims; ++k) {
    int64_t d = c.list_int(1, k, 0);
    if (d < 0) d += x.ndim;
    if (d < 0 || d >= x.ndim) return OpCost::generic_bytes();
    last = x[static_cast<int>(d)];
    n *= last;
  }
  if (n <= 0) return OpCost::vector(0);
  const int64_t batch = x.numel / n;
  // c2r: the last transformed size out is last_dim_size (arg 3), not self's
  if (RealOutput) n = n / last * c.int_arg(3, last);
  const double per =
      TenthsPerPoint / 10.0 * static_cast<double>(n) * std::log2(static_cast<double>(n));
  return OpCost::vector(batch * std::llround(per));
}

// GradScaler's unscale: each gradient multiplied by the inverse scale and checked finite.
OpCost amp_unscale(const OpCall& c) {
  OpCost cost = OpCost::vector(2 * list_numel(c, 0));
  cost.bytes_written = c.arg_bytes(0) + c.arg_bytes(1);  // the gradients, found_inf, in place
  return cost;
}

// ---------------------------------------------------------------- bytes-only families
OpCost moves_bytes(const OpCall&) { return OpCost::generic_bytes(); }
OpCost no_cost(const OpCall&) { return OpCost::none(); }
OpCost writes_only(const OpCall& c) { return OpCost::bytes(0, c.output_bytes()); }
// copy_(self, src): reads src, writes self.
OpCost copy(const OpCall& c) { return OpCost::bytes(c.input(1).nbytes(), c.input(0).nbytes()); }
// _foreach_copy_(self[], src[]) and _foreach_zero_(self[]): in place, their lists written.
OpCost foreach_copy(const OpCall& c) { return OpCost::bytes(c.arg_bytes(1), c.arg_bytes(0)); }
OpCost foreach_zero(const OpCall& c) { return OpCost::bytes(0, c.arg_bytes(0)); }
// Gathers read the indices and the gathered elements only, not the whole source.
int64_t index_bytes(const OpCall& c) {
  int64_t bytes = 0;
  for (const TensorMeta& t : c.tensors()) bytes += t.defined ? t.nbytes() : 0;
  return bytes;
}
OpCost gather(const OpCall& c) {
  int64_t source = c.input(args::kGatherSource).nbytes();
  int64_t out = c.output_bytes();
  return OpCost::bytes(index_bytes(c) - source + out, out);
}
// Scatters read the indices and the values and write one element per value; accumulating
// scatters add each value (1 FLOP per value). Args: the values' position and the accumulate mode.
template <typename Args>
OpCost scatter(const OpCall& c) {
  Shape self = c.input(0);
  // scatter_(..., value) has no source tensor: it writes one element per index entry.
  Shape values = c.is_tensor(Args::kValues) ? c.input(Args::kValues) : c.input(Args::kValues - 1);
  bool acc = Args::kMode == args::Accumulate::kAlways ||
             (Args::kMode == args::Accumulate::kByFlag && c.int_arg(Args::kFlag, 0) != 0);
  OpCost cost = OpCost::bytes(index_bytes(c) - self.nbytes(), values.numel * self.itemsize);
  cost.flops = acc ? values.numel : 0;
  return cost;
}

// ---------------------------------------------------------------- collectives
// A collective moves no FLOPs and is not memory traffic; its cost is its communication. `size`
// is nccl-tests' data size S (PERFORMANCE.md there) on this rank: the buffer an all-reduce,
// broadcast, reduce, send or recv moves; the whole output of an all-gather (n x the input); the
// whole input of a reduce-scatter and of an all-to-all; n x one rank's share for gather and
// scatter. Bus bytes = S x the algorithm's factor for the group size n (integer, rounded down).
enum class Bus { kAllReduce, kGather, kOne };  // 2(n-1)/n, (n-1)/n, 1
int64_t bus_bytes(int64_t size, int64_t n, Bus bus) {
  if (n <= 0) return 0;  // group size unknown
  switch (bus) {
    case Bus::kAllReduce:
      return size * 2 * (n - 1) / n;
    case Bus::kGather:
      return size * (n - 1) / n;
    case Bus::kOne:
      return size;
  }
  return 0;
}
// Payload: the argument whose tensors make S (a Tensor[][] is captured flat); Group: the
// ProcessGroup argument (captured as its size, 0 when unknown); PerRank: the payload is one
// rank's share, S = n x it (gather's input, scatter's output).
template <int Payload, int Group, Bus B, bool PerRank = false>
OpCost collective(const OpCall& c) {
  const int64_t n = c.int_arg(Group, 0);
  int64_t size = c.arg_bytes(Payload);
  if (PerRank) size *= n;
  return OpCost::collective(size, bus_bytes(size, n, B), n);
}
// barrier(tensor, process_group, ...): its tensor is a placeholder, nothing is moved.
OpCost barrier(const OpCall& c) { return OpCost::collective(0, 0, c.int_arg(1, 0)); }

// The table: one family per entry, op names wrapped by hand.
// clang-format off
struct Family {
  OpKind kind;
  CostFn cost;
  const char* formula;  // one line: what the rule counts (rules(), the README's table)
  std::vector<const char*> names;  // without the "aten::" prefix unless in another namespace (a
                                  // vector: an initializer_list member would dangle)
};

// In-place variants ("relu_") share the rule of their base op: see find_rule.
const std::vector<Family>& families() {
  static const std::vector<Family> table = {
      // ---- matmul class
      {OpKind::kMatmul, mm_family<args::Mm>, "A[m,k] @ B[k,n]: macs = m*k*n, flops = 2*macs",
       {"mm", "_int_mm", "_scaled_mm"}},
      {OpKind::kMatmul, mm_family<args::Addmm>, "bias + A[m,k] @ B[k,n]: macs = m*k*n (bias not counted), flops = 2*macs",
       {"addmm", "_addmm_activation"}},
      {OpKind::kMatmul, bmm_family<args::Mm>, "A[b,m,k] @ B[b,k,n]: macs = b*m*k*n, flops = 2*macs",
       {"bmm"}},
      {OpKind::kMatmul, grouped_mm,
       "G matmuls cut at offs: [M,K] @ [G,K,N], [M,K] @ [K,N] (K cut) or [G,M,K] @ [K,N]: macs = M*K*N; [G,M,K] @ [G,K,N]: G*M*K*N; flops = 2*macs",
       {"_grouped_mm", "_scaled_grouped_mm"}},
      {OpKind::kMatmul, packed_matmul,
       "x[..,K] @ packed weight -> [..,N]: macs = numel(output) * K, flops = 2*macs",
       {"_weight_int8pack_mm", "_weight_int4pack_mm", "_weight_int4pack_mm_for_cpu",
        "_weight_int4pack_mm_with_scales_and_zeros", "_dyn_quant_matmul_4bit",
        "quantized::linear", "quantized::linear_relu", "quantized::linear_dynamic",
        "quantized::linear_relu_dynamic", "quantized::linear_dynamic_fp16"}},
      {OpKind::kMatmul, bmm_family<args::Addmm>, "C + A[b,m,k] @ B[b,k,n]: macs = b*m*k*n, flops = 2*macs",
       {"baddbmm", "addbmm"}},
      {OpKind::kMatmul, mv_family<args::Mm>, "A[m,n] @ v[n] (dot: n): macs = numel(A), flops = 2*macs",
       {"mv", "dot", "vdot"}},
      {OpKind::kMatmul, mv_family<args::Addmm>, "y + A[m,n] @ v[n]: macs = m*n, flops = 2*macs",
       {"addmv"}},
      {OpKind::kMatmul, convolution,
       "macs = N * numel(weight) * prod(output spatial) (input spatial if transposed); flops = 2*macs",
       {"convolution", "_convolution", "convolution_overrideable"}},
      {OpKind::kMatmul, convolution_backward<args::ConvolutionBackward>, "one forward convolution per gradient in output_mask (input, weight); bias gradient not counted",
       {"convolution_backward"}},
      {OpKind::kMatmul, convolution_backward<args::ConvolutionBackwardOverrideable>,
       "one forward convolution per gradient in output_mask (input, weight); bias gradient not counted",
       {"convolution_backward_overrideable"}},
      {OpKind::kMatmul, mkldnn_rnn_layer,
       "macs = numel(input) / in * (numel(w_ih) + numel(w_hh)): the gate matmuls of one layer",
       {"mkldnn_rnn_layer"}},
      {OpKind::kMatmul, mkldnn_rnn_layer_backward, "2x the forward's matmuls (data and weights)",
       {"mkldnn_rnn_layer_backward"}},
      {OpKind::kMatmul, cudnn_rnn,
       "macs = numel(input) / in * sum(numel of each 2-D weight): every layer's gate matmuls",
       {"_cudnn_rnn", "miopen_rnn"}},
      {OpKind::kMatmul, cudnn_rnn_backward,
       "the forward's matmuls for the data gradients, again for the weights' (output_mask)",
       {"_cudnn_rnn_backward"}},
      {OpKind::kMatmul, sdpa_forward<Layout::kBHSD>,
       "q[b,h,sq,dq], k[b,h,sk,dq], v[b,h,sk,dv]: macs = b*h*sq*sk*(dq+dv); effective: kept (i,j) pairs only",
       {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable"}},
      {OpKind::kMatmul, sdpa_forward<Layout::kBSHD>,
       "q[b,sq,h,dq] (BSHD): macs = b*h*sq*sk*(dq+dv); effective: kept (i,j) pairs only",
       {"_flash_attention_forward", "_efficient_attention_forward"}},
      {OpKind::kMatmul, sdpa_backward<Layout::kBHSD>,
       "macs = b*h*sq*sk*(3*dq+2*dv) (2.5x forward when dq == dv); effective: kept pairs",
       {"_scaled_dot_product_flash_attention_for_cpu_backward",
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention_backward",
        "_scaled_dot_product_fused_attention_overrideable_backward"}},
      {OpKind::kMatmul, sdpa_backward<Layout::kBSHD>,
       "BSHD: macs = b*h*sq*sk*(3*dq+2*dv) (2.5x forward); effective: kept pairs",
       {"_flash_attention_backward", "_efficient_attention_backward"}},
      // ---- vector class: elementwise, 1 FLOP per output element
      {OpKind::kVector, per_output<1>,
       "flops = numel(output)",
       {"abs", "neg", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
        "reciprocal", "square", "frexp", "normal", "sin", "cos", "tan", "asin", "acos", "atan",
        "sinh", "cosh",
        "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "sign", "sgn", "signbit", "floor",
        "ceil", "round", "trunc", "frac", "nan_to_num", "logit", "isnan", "isinf", "isfinite",
        "bitwise_not", "logical_not", "clamp", "clamp_min", "clamp_max", "clip", "pow",
        "float_power", "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide",
        "remainder", "fmod", "atan2", "hypot", "copysign", "xlogy", "maximum", "minimum",
        "fmax", "fmin", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
        "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift",
        "bitwise_right_shift", "where", "masked_fill", "tril", "triu", "heaviside",
        "relu", "relu6", "leaky_relu", "rrelu_with_noise", "elu", "selu", "celu", "gelu",
        "silu", "mish", "sigmoid", "tanh", "hardtanh", "hardsigmoid", "hardswish", "softplus",
        "softshrink", "hardshrink", "threshold", "log_sigmoid_forward", "_prelu_kernel",
        "glu", "_conj_physical", "conj_physical", "_masked_scale"}},
      // fused multiply-add forms: 2 FLOPs per output element
      {OpKind::kVector, per_output<2>, "flops = 2 * numel(output)",
       {"addcmul", "addcdiv", "lerp"}},
      // activation backward: local derivative times the incoming gradient, 2 per element
      {OpKind::kVector, per_output<2>,
       "flops = 2 * numel(output)",
       {"threshold_backward", "gelu_backward", "silu_backward", "sigmoid_backward",
        "tanh_backward", "elu_backward", "leaky_relu_backward", "hardtanh_backward",
        "hardsigmoid_backward", "hardswish_backward", "softplus_backward", "mish_backward",
        "log_sigmoid_backward", "_prelu_kernel_backward", "glu_backward",
        "native_dropout_backward"}},
      // softmax: max, subtract, exp, sum, divide = 5 per element; backward 4
      {OpKind::kVector, per_output<5>,
       "flops = 5 * numel(output) (max, subtract, exp, sum, divide)",
       {"_softmax", "_log_softmax", "_masked_softmax", "_safe_softmax"}},
      {OpKind::kVector, per_output<4>,
       "flops = 4 * numel(output)",
       {"_softmax_backward_data", "_log_softmax_backward_data", "_masked_softmax_backward"}},
      // norms
      {OpKind::kVector, layer_norm, "flops = numel(x) * (5 + [weight] + [bias])",
       {"native_layer_norm"}},
      {OpKind::kVector, layer_norm_backward, "flops = 2 * numel(x) * (5 + [weight] + [bias])",
       {"native_layer_norm_backward"}},
      {OpKind::kVector, group_norm, "flops = numel(x) * (5 + [weight] + [bias])",
       {"native_group_norm"}},
      {OpKind::kVector, group_norm_backward, "flops = 2 * numel(x) * (5 + 2*[weight])",
       {"native_group_norm_backward"}},
      {OpKind::kVector, rms_norm, "flops = numel(x) * (3 + [weight])",
       {"_fused_rms_norm", "rms_norm"}},
      {OpKind::kVector, rms_norm_backward, "flops = 2 * numel(x) * (3 + [weight])",
       {"_fused_rms_norm_backward"}},
      {OpKind::kVector, batch_norm,
       "flops = numel(x) * (5 if training else 2, + [weight] + [bias])",
       {"native_batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm",
        "miopen_batch_norm"}},
      {OpKind::kVector, batch_norm_eval, "flops = numel(x) * (2 + [weight] + [bias])",
       {"_native_batch_norm_legit_no_training"}},
      {OpKind::kVector, batch_norm_backward,
       "flops = 2 * numel(x) * (5 + 2*[weight])",
       {"native_batch_norm_backward", "cudnn_batch_norm_backward", "miopen_batch_norm_backward",
        "batch_norm_backward"}},
      // reductions: 1 FLOP per input element (2 for norms: square + add, 3 for var/std)
      {OpKind::kVector, per_input<1>,
       "flops = numel(input)",
       {"sum", "nansum", "mean", "nanmean", "prod", "amax", "amin", "max", "min", "aminmax",
        "equal", "argmax", "argmin", "all", "any", "count_nonzero", "cumsum", "cumprod",
        "cummax", "cummin", "logcumsumexp", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d",
        "adaptive_avg_pool1d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "adaptive_max_pool3d", "embedding_dense_backward", "_embedding_bag_dense_backward",
        "bincount"}},
      {OpKind::kVector, per_input<2>, "flops = 2 * numel(input)",
       {"norm", "linalg_vector_norm", "logsumexp"}},
      {OpKind::kVector, per_input<3>, "flops = 3 * numel(input)",
       {"var", "std", "var_mean", "std_mean", "renorm"}},
      {OpKind::kVector, per_output<4>, "flops = 4 * numel(output) (abs * cos, abs * sin)",
       {"polar"}},
      // weight norm, w = g * v / ||v|| per slice along dim (wav2vec2's positional conv)
      {OpKind::kVector, per_input<3>,
       "flops = 3 * numel(v) (norm 2, scale 1; the per-slice g / norm not counted)",
       {"_weight_norm_interface"}},
      {OpKind::kVector, per_input<5>,
       "flops = 5 * numel(grad_w) (grad_g: multiply-sum 2; grad_v: 3)",
       {"_weight_norm_interface_backward"}},
      // pooling windows
      {OpKind::kVector, window_pool<1>, "flops = numel(output) * kernel",
       {"max_pool1d", "avg_pool1d",
                                                    "max_pool1d_with_indices"}},
      {OpKind::kVector, window_pool<2>,
       "flops = numel(output) * kh*kw",
       {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "mkldnn_max_pool2d",
        "quantized_max_pool2d"}},
      {OpKind::kVector, window_pool<3>,
       "flops = numel(output) * kd*kh*kw",
       {"max_pool3d", "max_pool3d_with_indices", "avg_pool3d"}},
      {OpKind::kVector, window_pool_backward<2>, "flops = numel(grad) * kh*kw",
       {"avg_pool2d_backward"}},
      {OpKind::kVector, window_pool_backward<3>, "flops = numel(grad) * kd*kh*kw",
       {"avg_pool3d_backward"}},
      // max-pool backward scatters each gradient once; adaptive-avg backward spreads it
      {OpKind::kVector, per_input<1>,
       "flops = numel(input)",
       {"max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
        "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
        "max_pool2d_backward"}},
      {OpKind::kVector, per_input<1, args::kBackwardSelf>,
       "flops = numel(forward input)",
       {"_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward"}},
      // reflection/replication pad backward: each gradient element added into the input's
      {OpKind::kVector, per_input<1>, "flops = numel(grad_output)",
       {"reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
        "replication_pad1d_backward", "replication_pad2d_backward",
        "replication_pad3d_backward"}},
      // interpolation
      {OpKind::kMemory, moves_bytes,
       "no FLOPs; bytes = distinct inputs read, outputs written",
       {"upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
        "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d"}},
      {OpKind::kVector, per_input<1>,
       "flops = numel(input)",
       {"upsample_nearest1d_backward", "upsample_nearest2d_backward",
        "upsample_nearest3d_backward", "_upsample_nearest_exact1d_backward",
        "_upsample_nearest_exact2d_backward", "_upsample_nearest_exact3d_backward"}},
      {OpKind::kVector, interpolate<2>, "flops = 3 * numel(output) (2 taps)",
       {"upsample_linear1d"}},
      {OpKind::kVector, interpolate<4>,
       "flops = 7 * numel(output) (4 taps)",
       {"upsample_bilinear2d", "_upsample_bilinear2d_aa"}},
      {OpKind::kVector, interpolate<8>, "flops = 15 * numel(output) (8 taps)",
       {"upsample_trilinear3d"}},
      {OpKind::kVector, interpolate<16>, "flops = 31 * numel(output) (16 taps)",
       {"upsample_bicubic2d", "_upsample_bicubic2d_aa"}},
      {OpKind::kVector, grid_sampler<4>,
       "flops = (2 * taps - 1) * numel(output): bilinear 4 taps, bicubic 16, nearest 0",
       {"grid_sampler_2d", "_grid_sampler_2d_cpu_fallback", "cudnn_grid_sampler"}},
      {OpKind::kVector, grid_sampler<8>,
       "flops = (2 * taps - 1) * numel(output): trilinear 8 taps, nearest 0",
       {"grid_sampler_3d"}},
      {OpKind::kVector, grid_sampler_backward<4>,
       "flops = (2 * taps - 1) * numel(grad) per gradient in output_mask (input, grid)",
       {"grid_sampler_2d_backward"}},
      {OpKind::kVector, grid_sampler_backward<8>,
       "flops = (2 * taps - 1) * numel(grad) per gradient in output_mask (input, grid)",
       {"grid_sampler_3d_backward"}},
      {OpKind::kVector, cdist, "flops = pairs * (3 * M + 1): difference, power, add; a root",
       {"_cdist_forward"}},
      {OpKind::kVector, cdist_backward, "flops = 4 * pairs * M", {"_cdist_backward"}},
      {OpKind::kVector, interpolate_backward<2>, "flops = 3 * numel(grad)",
       {"upsample_linear1d_backward"}},
      {OpKind::kVector, interpolate_backward<4>,
       "flops = 7 * numel(grad)",
       {"upsample_bilinear2d_backward", "_upsample_bilinear2d_aa_backward"}},
      {OpKind::kVector, interpolate_backward<8>, "flops = 15 * numel(grad)",
       {"upsample_trilinear3d_backward"}},
      {OpKind::kVector, interpolate_backward<16>,
       "flops = 31 * numel(grad)",
       {"upsample_bicubic2d_backward", "_upsample_bicubic2d_aa_backward"}},
      // losses and misc
      {OpKind::kVector, per_target,
       "flops = numel(target)",
       {"nll_loss_forward", "nll_loss2d_forward", "nll_loss_backward", "nll_loss2d_backward"}},
      {OpKind::kVector, per_input<3>,
       "flops = 3 * numel(input)",
       {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
        "soft_margin_loss", "multi_margin_loss", "multilabel_margin_loss_forward"}},
      {OpKind::kVector, per_input<2, args::kBackwardSelf>,
       "flops = 2 * numel(forward input)",
       {"mse_loss_backward", "smooth_l1_loss_backward", "huber_loss_backward",
        "binary_cross_entropy_backward", "multi_margin_loss_backward",
        "multilabel_margin_loss_backward"}},
      {OpKind::kVector, topk, "flops = numel(input) * ceil(log2(k+1))",
       {"topk"}},
      {OpKind::kVector, sort, "flops = numel(input) * ceil(log2(n)), n = size along dim",
       {"sort"}},
      {OpKind::kVector, histc,
       "flops = 4 * numel(input) (bin index, count); + 2 * numel(input) when min == max (the data's range)",
       {"histc"}},
      {OpKind::kVector, binary_search<args::kSearchsortedSorted>,
       "flops = numel(output) * ceil(log2(m+1)), m = sorted values per row (binary search)",
       {"searchsorted"}},
      {OpKind::kVector, binary_search<args::kBucketizeSorted>,
       "flops = numel(output) * ceil(log2(m+1)), m = boundaries (binary search)",
       {"bucketize"}},
      {OpKind::kVector, unique,
       "flops = n * ceil(log2(n)) + n, n = numel(input) (sort, neighbour compare)",
       {"_unique2", "_unique"}},
      {OpKind::kVector, unique_dim,
       "flops = numel(input) * ceil(log2(n)) + numel(input), n = size along dim",
       {"unique_dim"}},
      {OpKind::kVector, per_input<1>, "flops = numel(input) (neighbour compare)",
       {"unique_consecutive"}},
      {OpKind::kVector, isin,
       "flops = n * m (each element against each test element) when m < 10 * n^0.145, else sorts: (n+m) * ceil(log2(n+m)) + (n+m), plus each side's unique unless assume_unique",
       {"isin"}},
      {OpKind::kVector, embedding_bag, "flops = numel(indices) * dim; bytes read = indices + gathered rows",
       {"_embedding_bag", "_embedding_bag_forward_only"}},
      {OpKind::kVector, transform_bias_rescale_qkv, "flops = numel(qkv) * 4/3 (bias add, scale q)",
       {"_transform_bias_rescale_qkv"}},
      {OpKind::kVector, native_dropout, "flops = 2 * numel(input) when training, else 0",
       {"native_dropout"}},
      {OpKind::kVector, fused_adam,
       "flops = numel(params) * (10 + [weight_decay] + [amsgrad] + [maximize])",
       {"_fused_adam_", "_fused_adamw_"}},
      {OpKind::kVector, fft<50, false>,
       "flops = 5 * N * log2(N) per transform, N = the transformed points (FFTW's convention)",
       {"_fft_c2c"}},
      {OpKind::kVector, fft<25, false>,
       "flops = 2.5 * N * log2(N) per transform of N real points (FFTW's convention)",
       {"_fft_r2c"}},
      {OpKind::kVector, fft<25, true>,
       "flops = 2.5 * N * log2(N) per transform, N real points out (FFTW's convention)",
       {"_fft_c2r"}},
      {OpKind::kVector, per_list_element<1>,
       "flops = numel(tensors): per element, as the single-tensor op",
       {"_foreach_abs", "_foreach_acos", "_foreach_add", "_foreach_asin", "_foreach_atan",
        "_foreach_ceil", "_foreach_clamp_max", "_foreach_clamp_min", "_foreach_cos",
        "_foreach_cosh", "_foreach_div", "_foreach_erf", "_foreach_erfc", "_foreach_exp",
        "_foreach_expm1", "_foreach_floor", "_foreach_frac", "_foreach_lgamma", "_foreach_log",
        "_foreach_log10", "_foreach_log1p", "_foreach_log2", "_foreach_maximum",
        "_foreach_minimum", "_foreach_mul", "_foreach_neg", "_foreach_pow",
        "_foreach_reciprocal", "_foreach_round", "_foreach_rsqrt", "_foreach_sigmoid",
        "_foreach_sign", "_foreach_sin", "_foreach_sinh", "_foreach_sqrt", "_foreach_sub",
        "_foreach_tan", "_foreach_tanh", "_foreach_trunc", "_foreach_max"}},
      {OpKind::kVector, per_list_element<2>,
       "flops = 2 * numel(tensors): fused multiply-add forms, norms (square, add)",
       {"_foreach_addcdiv", "_foreach_addcmul", "_foreach_lerp", "_foreach_norm",
        "_foreach_powsum"}},
      {OpKind::kVector, amp_unscale,
       "flops = 2 * numel(grads) (multiply by the inverse scale, check finite)",
       {"_amp_foreach_non_finite_check_and_unscale_"}},
      {OpKind::kVector, fused_sgd,
       "flops = numel(params) * (1 + [weight_decay] + 2*[momentum, not the first step] + "
       "[nesterov] + [maximize])",
       {"_fused_sgd_"}},
      {OpKind::kVector, scatter<args::IndexPut>, "flops = numel(values) if accumulate else 0; bytes: indices + values",
       {"index_put", "_index_put_impl"}},
      {OpKind::kVector, scatter<args::ScatterAdd>,
       "flops = numel(source); bytes: indices + source",
       {"index_add", "scatter_add", "scatter_reduce", "index_reduce"}},
      // ---- memory: no FLOPs, bytes counted
      {OpKind::kMemory, copy, "no FLOPs; bytes read = src, written = self",
       {"copy_", "_copy_from", "_copy_from_and_resize"}},
      {OpKind::kMemory, moves_bytes,
       "no FLOPs; bytes = distinct inputs read, outputs written",
       {"clone", "_to_copy", "cat", "_cat", "stack", "repeat", "flip", "roll",
        "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
        "replication_pad1d", "replication_pad2d", "replication_pad3d", "_unsafe_index",
        "masked_select", "nonzero", "nonzero_numpy", "nonzero_static", "lift_fresh_copy",
        "_local_scalar_dense", "im2col",
        "col2im", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "repeat_interleave",
        "_pin_memory", "to_dense", "_to_dense", "unfold_backward", "select_backward",
        "slice_backward", "as_strided_scatter", "slice_scatter", "select_scatter",
        "diagonal_scatter", "index_fill", "masked_scatter", "_nested_tensor_from_mask",
        "int_repr", "dequantize", "quantize_per_tensor", "quantize_per_channel",
        "value_selecting_reduction_backward", "index_select_backward", "diagonal_backward",
        "as_strided_backward", "permute_backward",
        "_fused_sdp_choice", "pad", "diag_embed", "_amp_update_scale_", "_foreach_clone",
        "rot90"}},
      {OpKind::kMemory, foreach_copy, "no FLOPs; bytes read = src list, written = self list",
       {"_foreach_copy"}},
      {OpKind::kMemory, foreach_zero, "no FLOPs; bytes written = the list", {"_foreach_zero"}},
      {OpKind::kMemory, writes_only,
       "no FLOPs; bytes written = outputs",
       {"fill_", "zero_", "fill", "zeros", "ones", "full", "arange", "linspace", "logspace",
        "scalar_tensor", "uniform_", "normal_", "bernoulli_", "bernoulli", "random_",
        "exponential_", "geometric_", "log_normal_", "cauchy_", "randperm", "multinomial",
        "eye", "_efficientzerotensor", "zeros_like", "ones_like", "full_like", "new_zeros",
        "new_ones", "new_full", "rand_like", "randn_like", "randint_like", "rand", "randn",
        "randint", "empty_permuted", "new_tensor", "one_hot"}},
      {OpKind::kMemory, gather, "no FLOPs; bytes read = indices + gathered elements",
       {"embedding", "index_select", "gather", "take",
                                               "index"}},
      {OpKind::kMemory, scatter<args::Scatter>, "no FLOPs; bytes: indices + values written",
       {"scatter"}},
      // ---- collectives and p2p, as c10d dispatches them (namespace given: not aten)
      // (tensors, process_group, ...)
      {OpKind::kCollective, collective<0, 1, Bus::kAllReduce>,
       "no FLOPs; comm_bytes S = the tensors' bytes; bus bytes 2(n-1)/n x S",
       {"c10d::allreduce_", "c10d::allreduce_coalesced_"}},
      {OpKind::kCollective, collective<0, 1, Bus::kOne>,
       "no FLOPs; comm_bytes S = the tensors' bytes; bus bytes S",
       {"c10d::broadcast_", "c10d::reduce_", "c10d::send", "c10d::recv_",
        "c10d::recv_any_source_"}},
      // (output_tensors, input_tensors, process_group, ...): S = the whole output
      {OpKind::kCollective, collective<0, 2, Bus::kGather>,
       "no FLOPs; comm_bytes S = the whole output; bus bytes (n-1)/n x S",
       {"c10d::allgather_", "c10d::_allgather_base_", "c10d::allgather_coalesced_",
        "c10d::allgather_into_tensor_coalesced_"}},
      // (output_tensors, input_tensors, process_group, ...): S = the whole input
      {OpKind::kCollective, collective<1, 2, Bus::kGather>,
       "no FLOPs; comm_bytes S = the whole input; bus bytes (n-1)/n x S",
       {"c10d::reduce_scatter_", "c10d::_reduce_scatter_base_",
        "c10d::reduce_scatter_tensor_coalesced_", "c10d::alltoall_", "c10d::alltoall_base_"}},
      // gather_(output_tensors[][], input_tensors, pg, root, ...): S = n x the input
      {OpKind::kCollective, collective<1, 2, Bus::kGather, true>,
       "no FLOPs; comm_bytes S = n x the input; bus bytes (n-1)/n x S", {"c10d::gather_"}},
      // scatter_(output_tensors, input_tensors[][], pg, root, ...): S = n x the output
      {OpKind::kCollective, collective<0, 2, Bus::kGather, true>,
       "no FLOPs; comm_bytes S = n x the output; bus bytes (n-1)/n x S", {"c10d::scatter_"}},
      {OpKind::kCollective, barrier, "no FLOPs, no bytes (its tensor is a placeholder)",
       {"c10d::barrier", "c10d::monitored_barrier_"}},
      // ---- a kernel of its own (not a composite) whose work is the ATen ops it runs: they
      // count, and the op is not listed (an op with its own kernel and no rule is, since its
      // kernel may compute outside ATen). Each one's op tree checked with torch.profiler.
      {OpKind::kComposite, no_cost, "no count of its own: the ATen ops its kernel runs count",
       {"_native_multi_head_attention",    // in-projection, bmm, masked softmax, out-projection
        "_transformer_encoder_layer_fwd",  // the above, layer norms, feed-forward addmm
        "_embedding_bag_backward",         // dense or sparse backward
        "_linalg_det", "_linalg_slogdet", "_linalg_solve_ex", "linalg_inv_ex",  // over LU
        "linalg_matrix_exp"}},             // Taylor polynomials: bmm and add
      // ---- computed outside ATen, no FLOP rule: listed in unsupported_ops even where a small
      // ATen op inside them (tril, the error check's any) counted FLOPs and made them look
      // counted. Their bytes are those of the ATen ops below them.
      {OpKind::kUnsupported, no_cost,
       "no FLOP count: LAPACK/cuSOLVER work outside ATen, iterative; listed in unsupported_ops",
       {"_linalg_svd", "_linalg_eigh", "linalg_eig", "_linalg_eigvals", "linalg_lstsq",
        "cholesky_inverse", "linalg_householder_product", "ormqr", "linalg_ldl_factor_ex",
        "linalg_ldl_solve"}},
      // ---- direct factorizations and solves (LAPACK/cuSOLVER): Golub & Van Loan's counts
      {OpKind::kVector, cholesky, "flops = n^3 / 3 per [n,n] matrix (Golub & Van Loan)",
       {"linalg_cholesky_ex", "cholesky"}},
      {OpKind::kVector, lu_factor,
       "flops = k^2 * l - k^3 / 3 per [m,n] matrix, k = min(m,n), l = max (2n^3/3 square)",
       {"linalg_lu_factor_ex", "linalg_lu"}},
      {OpKind::kVector, qr,
       "flops = 2k^2 (l - k/3) per [m,n] matrix; + 4mqk - 2(m+q)k^2 + 4k^3/3 to form Q [m,q]",
       {"linalg_qr", "geqrf"}},
      {OpKind::kVector, factored_solve<0, 2>,
       "flops = 2 * n * numel(solution): two triangular solves per right-hand side",
       {"linalg_lu_solve"}},
      {OpKind::kVector, factored_solve<1, 2>,
       "flops = 2 * n * numel(solution): two triangular solves per right-hand side",
       {"cholesky_solve"}},
      {OpKind::kVector, factored_solve<0, 1>,
       "flops = n * numel(solution): one triangular solve per right-hand side",
       {"linalg_solve_triangular"}},
      {OpKind::kVector, factored_solve<1, 1>,
       "flops = n * numel(solution): one triangular solve per right-hand side",
       {"triangular_solve"}},
      // ---- views, allocation and metadata: no FLOPs, no bytes
      {OpKind::kView, no_cost,
       "no FLOPs, no bytes (view, allocation, metadata)",
       {"view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "t", "transpose",
        "permute", "expand", "expand_as", "squeeze", "unsqueeze", "slice", "select", "narrow",
        "split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
        "unsafe_chunk", "unbind", "unflatten", "flatten", "movedim", "moveaxis", "view_as",
        "view_as_real", "view_as_complex", "alias", "detach", "lift_fresh", "diagonal",
        "unfold", "numpy_T", "mT", "mH", "matrix_H", "adjoint", "tensor_split", "meshgrid",
        "broadcast_tensors",
        "swapaxes", "swapdims", "contiguous", "to", "type_as", "resolve_conj", "resolve_neg",
        "_conj", "conj", "_neg_view", "real", "imag",
        "dropout", "feature_dropout", "alpha_dropout", "empty", "empty_like", "empty_strided",
        "new_empty", "new_empty_strided", "resize_", "resize_as_", "set_", "_resize_output_",
        "_has_compatible_shallow_copy_type", "is_same_size", "is_nonzero", "size", "stride",
        "cudnn_is_acceptable",
        "_shape_as_tensor", "result_type", "_values", "_indices", "indices", "values",
        "coalesce", "_coalesced_", "is_coalesced", "sparse_resize_", "_nested_tensor_size",
        "_nested_tensor_strides", "_nested_view_from_buffer", "q_scale", "q_zero_point",
        "_make_per_tensor_quantized_tensor",
        "_version", "requires_grad_", "retain_grad", "_fw_primal", "_make_dual",
        "_unpack_dual", "record_stream", "_record_function_enter_new",
        "_record_function_exit", "item", "is_pinned", "pin_memory", "expand_copy",
        "broadcast_to", "atleast_1d", "atleast_2d", "atleast_3d", "align_as", "rename",
        "refine_names", "_assert_async", "_assert_tensor_metadata", "_functional_assert_async",
        "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_reshape_copy"}},
  };
  return table;
}
// clang-format on

struct Table {
  std::deque<std::string> names;  // stable storage for OpRule::name
  std::vector<OpRule> rules;
  std::unordered_map<std::string_view, size_t> index;
};

const Table& table() {
  static const Table t = [] {
    Table t;
    for (const Family& f : families()) {
      for (const char* n : f.names) {
        const std::string name(n);
        t.names.push_back(name.find("::") == std::string::npos ? "aten::" + name : name);
        t.rules.push_back(OpRule{t.names.back().c_str(), f.kind, f.cost, f.formula});
      }
    }
    for (size_t i = 0; i < t.rules.size(); ++i) t.index.emplace(t.rules[i].name, i);
    return t;
  }();
  return t;
}

const OpRule* find_builtin(std::string_view op_name) {
  const Table& t = table();
  auto it = t.index.find(op_name);
  // In-place variant: "aten::relu_" shares "aten::relu" (copy_, fill_, zero_ have their own).
  if (it == t.index.end() && op_name.size() > 1 && op_name.back() == '_') {
    it = t.index.find(op_name.substr(0, op_name.size() - 1));
  }
  return it == t.index.end() ? nullptr : &t.rules[it->second];
}

// Registered rules. Entries are never freed: a running profiler may hold a pointer to a rule
// (and its callable) that was replaced or removed since; registration is for a handful of ops.
struct UserRules {
  std::mutex mu;
  std::deque<std::string> strings;  // names and formulas
  std::deque<RuleFn> fns;
  std::deque<OpRule> rules;
  std::unordered_map<std::string_view, const OpRule*> active;
  std::atomic<uint64_t> version{0};
  std::atomic<bool> any{false};  // skip the lock while nothing was ever registered
};
UserRules& user_rules() {
  static UserRules* u = new UserRules();  // never destroyed: callbacks may run during exit
  return *u;
}

const OpRule* find_user(std::string_view op_name) {
  UserRules& u = user_rules();
  if (!u.any.load(std::memory_order_acquire)) return nullptr;
  std::lock_guard<std::mutex> lock(u.mu);
  auto it = u.active.find(op_name);
  return it == u.active.end() ? nullptr : it->second;
}

}  // namespace

const char* kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kMatmul:
      return "matmul";
    case OpKind::kVector:
      return "vector";
    case OpKind::kMemory:
      return "memory";
    case OpKind::kView:
      return "view";
    case OpKind::kCollective:
      return "collective";
    case OpKind::kUnsupported:
      return "unsupported";
    case OpKind::kComposite:
      return "composite";
  }
  return "unknown";
}

const OpRule* find_rule(std::string_view op_name) {
  const OpRule* user = find_user(op_name);
  return user ? user : find_builtin(op_name);
}

void register_rule(const std::string& op_name, OpKind kind, RuleFn cost,
                   const std::string& formula) {
  if (op_name.empty()) {
    throw std::invalid_argument("register_rule: empty op name; give it as 'namespace::op'");
  }
  if (kind == OpKind::kUnsupported) {
    throw std::invalid_argument("register_rule(" + op_name +
                                "): kind must be matmul, vector, memory, view or composite");
  }
  if (!cost && kind == OpKind::kComposite) cost = [](const OpCall&) { return OpCost::none(); };
  if (!cost) throw std::invalid_argument("register_rule(" + op_name + "): no cost function");
  UserRules& u = user_rules();
  std::lock_guard<std::mutex> lock(u.mu);
  u.strings.push_back(op_name);
  const char* name = u.strings.back().c_str();
  u.strings.push_back(formula);
  const char* text = u.strings.back().c_str();
  u.fns.push_back(std::move(cost));
  u.rules.push_back(OpRule{name, kind, nullptr, text, &u.fns.back(), true});
  u.active[std::string_view(u.strings[u.strings.size() - 2])] = &u.rules.back();
  u.any.store(true, std::memory_order_release);
  u.version.fetch_add(1);
}

bool unregister_rule(const std::string& op_name) {
  UserRules& u = user_rules();
  std::lock_guard<std::mutex> lock(u.mu);
  auto it = u.active.find(op_name);
  if (it == u.active.end()) return false;
  u.active.erase(it);
  u.version.fetch_add(1);
  return true;
}

uint64_t rules_version() { return user_rules().version.load(std::memory_order_acquire); }

std::vector<RuleRow> rule_rows() {
  std::vector<RuleRow> rows;
  UserRules& u = user_rules();
  std::lock_guard<std::mutex> lock(u.mu);
  for (const OpRule& r : table().rules) {
    rows.push_back(RuleRow{r.name, r.kind, r.formula, false, u.active.count(r.name) > 0});
  }
  std::vector<const OpRule*> user;
  for (const auto& entry : u.active) user.push_back(entry.second);
  std::sort(user.begin(), user.end(),
            [](const OpRule* a, const OpRule* b) { return std::string_view(a->name) < b->name; });
  for (const OpRule* r : user) rows.push_back(RuleRow{r->name, r->kind, r->formula, true, false});
  return rows;
}

int64_t causal_kept_pairs(int64_t sq, int64_t sk) {
  if (sq <= 0 || sk <= 0) return 0;
  // Rows i < sk keep i + 1 keys (a triangle); rows from sk on keep all sk.
  const int64_t tri = std::min(sq, sk);
  return tri * (tri + 1) / 2 + (sq - tri) * sk;
}

const AttentionArgs* find_attention(std::string_view op_name) {
  // (query, key, attn_mask, is_causal) positions in each schema.
  static const std::unordered_map<std::string_view, AttentionArgs> ops = {
      // scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, ...)
      {"aten::scaled_dot_product_attention", {0, 1, 3, 5, false}},
      {"aten::_scaled_dot_product_attention_math", {0, 1, 3, 5, false}},
      // _scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, is_causal, *,
      //                                             attn_mask, scale)
      {"aten::_scaled_dot_product_flash_attention_for_cpu", {0, 1, 5, 4, false}},
      // ..._backward(grad_out, query, key, value, out, logsumexp, dropout_p, is_causal, *,
      //              attn_mask, scale)
      {"aten::_scaled_dot_product_flash_attention_for_cpu_backward", {1, 2, 8, 7, false}},
      // _scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, ...)
      {"aten::_scaled_dot_product_flash_attention", {0, 1, -1, 4, false}},
      // _scaled_dot_product_efficient_attention(query, key, value, attn_bias,
      //                                         compute_log_sumexp, dropout_p, is_causal, ...)
      {"aten::_scaled_dot_product_efficient_attention", {0, 1, 3, 6, false}},
      {"aten::_scaled_dot_product_cudnn_attention", {0, 1, 3, 6, false}},
  };
  auto it = ops.find(op_name);
  return it == ops.end() ? nullptr : &it->second;
}

const std::vector<OpRule>& all_rules() { return table().rules; }

OpCost evaluate(const OpRule& rule, const OpCall& call) {
  OpCost cost = rule.fn ? (*rule.fn)(call) : rule.cost(call);
  if (rule.kind == OpKind::kView) return OpCost{cost.macs, cost.flops, 0, 0};
  if (cost.bytes_read == OpCost::kGenericBytes) cost.bytes_read = call.input_bytes();
  if (cost.bytes_written == OpCost::kGenericBytes) cost.bytes_written = call.output_bytes();
  return cost;
}

}  // namespace effmetrics
