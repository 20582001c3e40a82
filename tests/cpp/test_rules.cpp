// Each rule family against its formula, written out here. No ATen: rules see plain OpCalls.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "effmetrics/rules.h"

namespace em = effmetrics;

namespace {

em::OpCost run(const char* op, const em::OpCall& call) {
  const em::OpRule* rule = em::find_rule(op);
  EXPECT_NE(rule, nullptr) << op;
  return rule ? em::evaluate(*rule, call) : em::OpCost{};
}

em::OpKind kind(const char* op) { return em::find_rule(op)->kind; }

}  // namespace

TEST(Matmul, MmAddmm) {
  const int64_t m = 7, k = 5, n = 3;
  em::OpCall mm;
  mm.add_tensor({m, k});
  mm.add_tensor({k, n});
  mm.add_output({m, n});
  em::OpCost c = run("aten::mm", mm);
  EXPECT_EQ(c.macs, m * k * n);
  EXPECT_EQ(c.flops, 2 * m * k * n);
  EXPECT_EQ(c.bytes_read, 4 * (m * k + k * n));
  EXPECT_EQ(c.bytes_written, 4 * m * n);
  EXPECT_EQ(kind("aten::mm"), em::OpKind::kMatmul);

  em::OpCall addmm;  // bias is not counted in FLOPs but is read
  addmm.add_tensor({n});
  addmm.add_tensor({m, k});
  addmm.add_tensor({k, n});
  addmm.add_double(1.0);
  addmm.add_double(1.0);
  addmm.add_output({m, n});
  c = run("aten::addmm", addmm);
  EXPECT_EQ(c.flops, 2 * m * k * n);
  EXPECT_EQ(c.bytes_read, 4 * (n + m * k + k * n));
}

TEST(Matmul, BmmBaddbmmMvDot) {
  const int64_t b = 4, m = 6, k = 8, n = 2;
  em::OpCall bmm;
  bmm.add_tensor({b, m, k});
  bmm.add_tensor({b, k, n});
  bmm.add_output({b, m, n});
  EXPECT_EQ(run("aten::bmm", bmm).macs, b * m * k * n);

  em::OpCall baddbmm;
  baddbmm.add_tensor({b, m, n});
  baddbmm.add_tensor({b, m, k});
  baddbmm.add_tensor({b, k, n});
  baddbmm.add_output({b, m, n});
  EXPECT_EQ(run("aten::baddbmm", baddbmm).flops, 2 * b * m * k * n);

  em::OpCall mv;
  mv.add_tensor({m, k});
  mv.add_tensor({k});
  mv.add_output({m});
  EXPECT_EQ(run("aten::mv", mv).macs, m * k);

  em::OpCall dot;
  dot.add_tensor({k});
  dot.add_tensor({k});
  dot.add_output({});
  EXPECT_EQ(run("aten::dot", dot).macs, k);
}

// convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
em::OpCall conv_call(std::initializer_list<int64_t> x, std::initializer_list<int64_t> w,
                     std::initializer_list<int64_t> out, bool transposed, int64_t groups,
                     int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1) {
  em::OpCall c;
  c.add_tensor(x);
  c.add_tensor(w);
  c.add_none();
  c.add_int_list({stride});
  c.add_int_list({padding});
  c.add_int_list({dilation});
  c.add_bool(transposed);
  c.add_int_list({0});
  c.add_int(groups);
  c.add_output(out);
  return c;
}

TEST(Convolution, Conv2dGroupedDepthwiseStrided) {
  // 2d: N=2, Cin=8, Cout=16, 3x3, 10x12 output
  {
    const int64_t N = 2, Cin = 8, Cout = 16, k = 3, Ho = 10, Wo = 12;
    auto c = conv_call({N, Cin, 12, 14}, {Cout, Cin, k, k}, {N, Cout, Ho, Wo}, false, 1);
    EXPECT_EQ(run("aten::convolution", c).macs, N * Cout * Cin * k * k * Ho * Wo);
  }
  // grouped: groups=4, weight holds Cin/groups input channels
  {
    const int64_t N = 1, Cin = 16, Cout = 32, g = 4, k = 3, Ho = 8, Wo = 8;
    auto c = conv_call({N, Cin, 8, 8}, {Cout, Cin / g, k, k}, {N, Cout, Ho, Wo}, false, g);
    EXPECT_EQ(run("aten::convolution", c).macs, N * Cout * (Cin / g) * k * k * Ho * Wo);
  }
  // depthwise with stride 2, padding 2 (the output shape carries the stride)
  {
    const int64_t N = 3, C = 24, k = 5, H = 14, s = 2, p = 2;
    const int64_t Ho = (H + 2 * p - k) / s + 1;  // 7
    auto c = conv_call({N, C, H, H}, {C, 1, k, k}, {N, C, Ho, Ho}, false, C, s, p);
    EXPECT_EQ(run("aten::_convolution", c).macs, N * C * k * k * Ho * Ho);
  }
  // dilation 2, stride 3: output (H + 2p - d(k-1) - 1) / s + 1
  {
    const int64_t N = 2, Cin = 6, Cout = 10, k = 3, H = 20, s = 3, d = 2;
    const int64_t Ho = (H - d * (k - 1) - 1) / s + 1;  // 6
    auto c = conv_call({N, Cin, H, H}, {Cout, Cin, k, k}, {N, Cout, Ho, Ho}, false, 1, s, 0, d);
    EXPECT_EQ(run("aten::convolution", c).macs, N * Cout * Cin * k * k * Ho * Ho);
  }
}

TEST(Convolution, Conv1dConv3dTransposed) {
  {
    const int64_t N = 2, Cin = 4, Cout = 6, k = 3, Lin = 54, d = 2;
    const int64_t L = Lin - d * (k - 1);  // dilated, stride 1, no padding: 50
    auto c = conv_call({N, Cin, Lin}, {Cout, Cin, k}, {N, Cout, L}, false, 1, 1, 0, d);
    EXPECT_EQ(run("aten::convolution", c).flops, 2 * N * Cout * Cin * k * L);
  }
  {
    const int64_t N = 1, Cin = 2, Cout = 3, k = 2, D = 3, H = 4, W = 5;
    auto c = conv_call({N, Cin, 4, 5, 6}, {Cout, Cin, k, k, k}, {N, Cout, D, H, W}, false, 1);
    EXPECT_EQ(run("aten::convolution", c).macs, N * Cout * Cin * k * k * k * D * H * W);
  }
  {
    // transposed: weight [Cin, Cout/g, k, k]; every input pixel meets the whole kernel
    const int64_t N = 2, Cin = 8, Cout = 4, g = 2, k = 4, H = 5, W = 6;
    auto c = conv_call({N, Cin, H, W}, {Cin, Cout / g, k, k}, {N, Cout, 12, 14}, true, g);
    EXPECT_EQ(run("aten::convolution", c).macs, N * Cin * (Cout / g) * k * k * H * W);
  }
}

// convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation,
//                      transposed, output_padding, groups, output_mask)
em::OpCall conv_backward_call(std::initializer_list<bool> mask, int64_t groups) {
  em::OpCall c;
  c.add_tensor({2, 16, 8, 8});           // grad_out
  c.add_tensor({2, 8, 8, 8});            // input
  c.add_tensor({16, 8 / groups, 3, 3});  // weight
  c.add_int_list({16});
  c.add_int_list({1});
  c.add_int_list({1});
  c.add_int_list({1});
  c.add_bool(false);
  c.add_int_list({0});
  c.add_int(groups);
  c.add_bool_list(mask);
  c.add_output({2, 8, 8, 8});
  c.add_output({16, 8 / groups, 3, 3});
  return c;
}

TEST(Convolution, BackwardByOutputMask) {
  for (int64_t g : {1, 2, 8}) {
    const int64_t fwd = 2 * 16 * (8 / g) * 3 * 3 * 8 * 8;  // N*Cout*Cin/g*k*k*H*W
    EXPECT_EQ(run("aten::convolution_backward", conv_backward_call({1, 1, 0}, g)).macs, 2 * fwd);
    EXPECT_EQ(run("aten::convolution_backward", conv_backward_call({0, 1, 0}, g)).macs, fwd);
    EXPECT_EQ(run("aten::convolution_backward", conv_backward_call({0, 1, 1}, g)).macs, fwd);
    EXPECT_EQ(run("aten::convolution_backward", conv_backward_call({1, 0, 0}, g)).macs, fwd);
    EXPECT_EQ(run("aten::convolution_backward", conv_backward_call({0, 0, 1}, g)).macs, 0);
  }
}

// A 2-layer bidirectional LSTM with a projection as cuDNN takes it: _cudnn_rnn(input,
// weight[], weight_stride0, ...) with each layer and direction's w_ih, w_hh, b_ih, b_hh, w_hr.
em::OpCall cudnn_lstm_call(bool backward, bool weight_grad) {
  const int64_t T = 7, B = 3, I = 10, H = 16, P = 8, G = 4;
  em::OpCall c;
  c.add_tensor({T, B, I});
  c.begin_tensor_list();
  std::vector<std::vector<int64_t>> shapes;
  for (int layer = 0; layer < 2; ++layer) {
    for (int direction = 0; direction < 2; ++direction) {
      const int64_t in = layer == 0 ? I : 2 * P;  // layer 2 reads both directions' projections
      for (std::vector<int64_t> s :
           {std::vector<int64_t>{G * H, in}, {G * H, P}, {G * H}, {G * H}, {P, H}}) {
        shapes.push_back(s);
      }
    }
  }
  uintptr_t id = 1;
  for (const auto& s : shapes) {
    c.add_list_tensor(reinterpret_cast<const void*>(id++), s.data(), static_cast<int>(s.size()), 4);
  }
  if (backward) {
    for (int k = 2; k < 21; ++k) c.add_none();  // weight_stride0 ... reserve: unread
    c.add_bool_list({true, true, true, weight_grad});
  }
  return c;
}

TEST(Matmul, RecurrentLayers) {
  // oneDNN, one LSTM layer and direction: input [T, B, I], w_ih [4H, I], w_hh [4H, H].
  const int64_t T = 5, B = 2, I = 16, H = 32;
  em::OpCall layer;
  layer.add_tensor({B, T, I});  // batch first: the rows are the same
  layer.add_tensor({4 * H, I});
  layer.add_tensor({4 * H, H});
  layer.add_tensor({4 * H});
  layer.add_tensor({4 * H});
  const int64_t macs = T * B * 4 * H * (I + H);
  EXPECT_EQ(run("aten::mkldnn_rnn_layer", layer).macs, macs);
  EXPECT_EQ(run("aten::mkldnn_rnn_layer_backward", layer).macs, 2 * macs);
  EXPECT_EQ(kind("aten::mkldnn_rnn_layer"), em::OpKind::kMatmul);
  // cuDNN, every layer and direction at once, projections included
  const int64_t rows = 7 * 3, G = 4, H2 = 16, P = 8;
  const int64_t layer1 = G * H2 * (10 + P) + P * H2, layer2 = G * H2 * (2 * P + P) + P * H2;
  const int64_t fwd = rows * 2 * (layer1 + layer2);
  EXPECT_EQ(run("aten::_cudnn_rnn", cudnn_lstm_call(false, false)).macs, fwd);
  EXPECT_EQ(run("aten::_cudnn_rnn_backward", cudnn_lstm_call(true, true)).macs, 2 * fwd);
  EXPECT_EQ(run("aten::_cudnn_rnn_backward", cudnn_lstm_call(true, false)).macs, fwd);
  em::OpCall unreadable;  // no weights: bytes only, never a guess
  unreadable.add_tensor({T, B, I});
  EXPECT_EQ(run("aten::mkldnn_rnn_layer", unreadable).flops, 0);
}

TEST(Vector, ForeachListsAndFusedOptimizers) {
  // A list of two tensors, [3, 4] and [5]: 17 elements, 68 bytes.
  auto lists = [](int n_lists) {
    em::OpCall c;
    const std::vector<int64_t> a{3, 4}, b{5};
    uintptr_t id = 1;
    for (int l = 0; l < n_lists; ++l) {
      c.begin_tensor_list();
      c.add_list_tensor(reinterpret_cast<const void*>(id++), a.data(), 2, 4);
      c.add_list_tensor(reinterpret_cast<const void*>(id++), b.data(), 1, 4);
    }
    return c;
  };
  em::OpCall add_ = lists(2);  // _foreach_add_(self[], other[]): in place, no outputs
  em::OpCost c = run("aten::_foreach_add_", add_);
  EXPECT_EQ(c.flops, 17);
  EXPECT_EQ(c.bytes_written, 68);
  EXPECT_EQ(c.bytes_read, 2 * 68);
  em::OpCall lerp = lists(2);  // out of place: its outputs written
  lerp.add_double(0.1);
  lerp.add_output({3, 4});
  lerp.add_output({5});
  c = run("aten::_foreach_lerp", lerp);
  EXPECT_EQ(c.flops, 2 * 17);
  EXPECT_EQ(c.bytes_written, 68);
  EXPECT_EQ(run("aten::_foreach_norm", lists(1)).flops, 2 * 17);
  EXPECT_EQ(kind("aten::_foreach_zero_"), em::OpKind::kMemory);
  EXPECT_EQ(run("aten::_foreach_zero_", lists(1)).bytes_written, 68);  // zero_grad, foreach
  c = run("aten::_foreach_copy_", lists(2));
  EXPECT_EQ(c.bytes_read, 68);
  EXPECT_EQ(c.bytes_written, 68);
  // _fused_adamw_(self[], grads[], exp_avgs[], exp_avg_sqs[], max_exp_avg_sqs[], state_steps[],
  // lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, ...)
  auto adamw = [&](double weight_decay, bool amsgrad) {
    em::OpCall c = lists(6);
    for (double v : {1e-3, 0.9, 0.999, weight_decay, 1e-8}) c.add_double(v);
    c.add_bool(amsgrad);
    c.add_bool(false);
    return c;
  };
  c = run("aten::_fused_adamw_", adamw(0.01, false));
  EXPECT_EQ(c.flops, 11 * 17);
  EXPECT_EQ(c.bytes_written, 3 * 68);  // parameters, exp_avgs, exp_avg_sqs
  c = run("aten::_fused_adamw_", adamw(0.0, true));
  EXPECT_EQ(c.flops, 11 * 17);  // no decay, amsgrad's maximum
  EXPECT_EQ(c.bytes_written, 4 * 68);
}

TEST(Attention, SdpaForwardBackwardAndGqa) {
  const int64_t b = 2, h = 4, sq = 16, sk = 24, d = 8, dv = 12;
  em::OpCall fwd;  // BHSD
  fwd.add_tensor({b, h, sq, d});
  fwd.add_tensor({b, h, sk, d});
  fwd.add_tensor({b, h, sk, dv});
  fwd.add_double(0.0);
  fwd.add_bool(false);
  fwd.add_output({b, h, sq, dv});
  const int64_t fwd_flops = 2 * b * h * sq * sk * (d + dv);
  EXPECT_EQ(run("aten::_scaled_dot_product_flash_attention_for_cpu", fwd).flops, fwd_flops);
  EXPECT_EQ(run("aten::_scaled_dot_product_efficient_attention", fwd).flops, fwd_flops);
  EXPECT_EQ(kind("aten::_scaled_dot_product_cudnn_attention"), em::OpKind::kMatmul);

  em::OpCall bshd;  // _flash_attention_forward takes [b, s, h, d]
  bshd.add_tensor({b, sq, h, d});
  bshd.add_tensor({b, sk, h, d});
  bshd.add_tensor({b, sk, h, dv});
  EXPECT_EQ(run("aten::_flash_attention_forward", bshd).flops, fwd_flops);

  em::OpCall bwd;  // (grad_out, q, k, v, ...)
  bwd.add_tensor({b, h, sq, dv});
  bwd.add_tensor({b, h, sq, d});
  bwd.add_tensor({b, h, sk, d});
  bwd.add_tensor({b, h, sk, dv});
  EXPECT_EQ(run("aten::_scaled_dot_product_flash_attention_for_cpu_backward", bwd).macs,
            b * h * sq * sk * (3 * d + 2 * dv));

  em::OpCall square;  // dq == dv: backward is 2.5x forward
  square.add_tensor({b, h, sq, d});
  square.add_tensor({b, h, sq, d});
  square.add_tensor({b, h, sk, d});
  square.add_tensor({b, h, sk, d});
  em::OpCall square_fwd;
  square_fwd.add_tensor({b, h, sq, d});
  square_fwd.add_tensor({b, h, sk, d});
  square_fwd.add_tensor({b, h, sk, d});
  EXPECT_EQ(2 * run("aten::_scaled_dot_product_efficient_attention_backward", square).flops,
            5 * run("aten::_scaled_dot_product_efficient_attention", square_fwd).flops);

  em::OpCall gqa;  // 8 query heads share 2 key/value heads: work scales with query heads
  gqa.add_tensor({b, 8, sq, d});
  gqa.add_tensor({b, 2, sk, d});
  gqa.add_tensor({b, 2, sk, d});
  EXPECT_EQ(run("aten::_scaled_dot_product_flash_attention", gqa).macs, b * 8 * sq * sk * 2 * d);
}

TEST(Vector, ElementwiseActivationsSoftmax) {
  em::OpCall unary;
  unary.add_tensor({3, 5});
  unary.add_output({3, 5});
  EXPECT_EQ(run("aten::gelu", unary).flops, 15);
  EXPECT_EQ(run("aten::exp", unary).flops, 15);
  EXPECT_EQ(run("aten::_softmax", unary).flops, 5 * 15);
  EXPECT_EQ(run("aten::_softmax_backward_data", unary).flops, 4 * 15);
  EXPECT_EQ(run("aten::gelu_backward", unary).flops, 2 * 15);
  EXPECT_EQ(run("aten::addcmul", unary).flops, 2 * 15);
  EXPECT_EQ(run("aten::gelu", unary).macs, 0);
  EXPECT_EQ(kind("aten::gelu"), em::OpKind::kVector);

  em::OpCall broadcast;  // [4,1] + [1,6] -> [4,6]: one FLOP per output element
  broadcast.add_tensor({4, 1});
  broadcast.add_tensor({1, 6});
  broadcast.add_output({4, 6});
  em::OpCost c = run("aten::add", broadcast);
  EXPECT_EQ(c.flops, 24);
  EXPECT_EQ(c.bytes_read, 4 * (4 + 6));
  EXPECT_EQ(c.bytes_written, 4 * 24);
}

TEST(Vector, Norms) {
  const int64_t n = 6 * 32;
  em::OpCall ln;  // native_layer_norm(input, normalized_shape, weight, bias, eps)
  ln.add_tensor({6, 32});
  ln.add_int_list({32});
  ln.add_tensor({32});
  ln.add_tensor({32});
  ln.add_double(1e-5);
  EXPECT_EQ(run("aten::native_layer_norm", ln).flops, n * (5 + 2));
  em::OpCall ln_plain;
  ln_plain.add_tensor({6, 32});
  ln_plain.add_int_list({32});
  ln_plain.add_none();
  ln_plain.add_none();
  EXPECT_EQ(run("aten::native_layer_norm", ln_plain).flops, n * 5);

  em::OpCall ln_bwd;  // (grad_out, input, normalized_shape, mean, rstd, weight, bias, mask)
  ln_bwd.add_tensor({6, 32});
  ln_bwd.add_tensor({6, 32});
  ln_bwd.add_int_list({32});
  ln_bwd.add_tensor({6, 1});
  ln_bwd.add_tensor({6, 1});
  ln_bwd.add_tensor({32});
  ln_bwd.add_tensor({32});
  EXPECT_EQ(run("aten::native_layer_norm_backward", ln_bwd).flops, 2 * n * 7);

  em::OpCall bn;  // native_batch_norm(input, weight, bias, running_mean, running_var, training,..)
  bn.add_tensor({4, 8, 5, 5});
  bn.add_tensor({8});
  bn.add_tensor({8});
  bn.add_tensor({8});
  bn.add_tensor({8});
  bn.add_bool(true);
  EXPECT_EQ(run("aten::native_batch_norm", bn).flops, 4 * 8 * 25 * (5 + 2));
  em::OpCall bn_eval;  // _native_batch_norm_legit_no_training(input, weight, bias, rm, rv, ...)
  bn_eval.add_tensor({4, 8, 5, 5});
  bn_eval.add_tensor({8});
  bn_eval.add_tensor({8});
  EXPECT_EQ(run("aten::_native_batch_norm_legit_no_training", bn_eval).flops, 4 * 8 * 25 * 4);

  em::OpCall gn;  // native_group_norm(input, weight, bias, N, C, HxW, group, eps)
  gn.add_tensor({2, 8, 4, 4});
  gn.add_tensor({8});
  gn.add_none();
  EXPECT_EQ(run("aten::native_group_norm", gn).flops, 2 * 8 * 16 * (5 + 1));

  em::OpCall rms;  // _fused_rms_norm(input, normalized_shape, weight, eps)
  rms.add_tensor({3, 64});
  rms.add_int_list({64});
  rms.add_tensor({64});
  EXPECT_EQ(run("aten::_fused_rms_norm", rms).flops, 3 * 64 * (3 + 1));
}

TEST(Vector, ReductionsPoolingInterpolation) {
  em::OpCall red;
  red.add_tensor({10, 20});
  red.add_output({10});
  EXPECT_EQ(run("aten::sum", red).flops, 200);
  EXPECT_EQ(run("aten::mean", red).flops, 200);
  EXPECT_EQ(run("aten::var", red).flops, 3 * 200);

  em::OpCall pool;  // max_pool2d(self, kernel_size=[3], ...): one int means 3x3
  pool.add_tensor({1, 4, 9, 9});
  pool.add_int_list({3});
  pool.add_int_list({3});
  pool.add_output({1, 4, 3, 3});
  EXPECT_EQ(run("aten::max_pool2d", pool).flops, 4 * 9 * 9);
  em::OpCall pool2;  // kernel [2, 3]
  pool2.add_tensor({1, 2, 8, 9});
  pool2.add_int_list({2, 3});
  pool2.add_output({1, 2, 4, 3});
  EXPECT_EQ(run("aten::avg_pool2d", pool2).flops, 2 * 4 * 3 * 6);

  em::OpCall adaptive;
  adaptive.add_tensor({2, 16, 7, 7});
  adaptive.add_int_list({1, 1});
  adaptive.add_output({2, 16, 1, 1});
  EXPECT_EQ(run("aten::_adaptive_avg_pool2d", adaptive).flops, 2 * 16 * 49);

  em::OpCall up;
  up.add_tensor({1, 3, 4, 4});
  up.add_output({1, 3, 8, 8});
  EXPECT_EQ(run("aten::upsample_nearest2d", up).flops, 0);
  EXPECT_EQ(run("aten::upsample_nearest2d", up).bytes_written, 4 * 3 * 64);
  EXPECT_EQ(run("aten::upsample_bilinear2d", up).flops, 7 * 3 * 64);
}

TEST(Memory, EmbeddingReadsOnlyGatheredRows) {
  const int64_t vocab = 50000, dim = 64, tokens = 10;
  em::OpCall emb;  // embedding(weight, indices)
  emb.add_tensor({vocab, dim});
  emb.add_tensor({2, 5}, 8);  // int64 indices
  emb.add_output({2, 5, dim});
  em::OpCost c = run("aten::embedding", emb);
  EXPECT_EQ(c.flops, 0);
  EXPECT_EQ(c.bytes_read, tokens * 8 + tokens * dim * 4);
  EXPECT_EQ(c.bytes_written, tokens * dim * 4);
  EXPECT_EQ(kind("aten::embedding"), em::OpKind::kMemory);
}

TEST(Memory, CopyViewsIndexPut) {
  em::OpCall copy;  // copy_(self, src): reads src only
  copy.add_tensor({100}, 2);
  copy.add_tensor({100}, 4);
  copy.add_output({100}, 2);
  em::OpCost c = run("aten::copy_", copy);
  EXPECT_EQ(c.bytes_read, 400);
  EXPECT_EQ(c.bytes_written, 200);

  em::OpCall view;
  view.add_tensor({4, 4});
  view.add_int_list({16});
  view.add_output({16});
  c = run("aten::view", view);
  EXPECT_EQ(c.flops + c.bytes_read + c.bytes_written, 0);
  EXPECT_EQ(run("aten::transpose", view).bytes_read, 0);

  for (bool accumulate : {false, true}) {
    em::OpCall put;  // index_put_(self, indices[], values, accumulate)
    put.add_tensor({1000});
    put.begin_tensor_list();
    put.add_list_tensor(reinterpret_cast<const void*>(0x10),
                        std::initializer_list<int64_t>{30}.begin(), 1, 8);
    put.add_tensor({30});
    put.add_bool(accumulate);
    put.add_output({1000});
    c = run("aten::index_put_", put);
    EXPECT_EQ(c.flops, accumulate ? 30 : 0);
    EXPECT_EQ(c.bytes_read, 30 * 8 + 30 * 4);
    EXPECT_EQ(c.bytes_written, 30 * 4);
  }
}

TEST(Bytes, DistinctInputsReadOnce) {
  int token = 0;
  const int64_t sizes[] = {8, 8};
  em::OpCall square;  // x * x
  square.add_tensor(&token, sizes, 2, 4);
  square.add_tensor(&token, sizes, 2, 4);
  square.add_output({8, 8});
  EXPECT_EQ(run("aten::mul", square).bytes_read, 64 * 4);
}

// A frame's OpCall is cleared and refilled op after op: what one op captured (past the storage's
// first sizes, so it grows mid-call) reads back exactly, and a refill after clear() reads as the
// new op's alone.
TEST(Bytes, OpCallStorageGrowsAndIsReused) {
  em::OpCall call;
  for (int round = 0; round < 2; ++round) {
    const int n = round == 0 ? 40 : 3;  // 40 tensors of up to 5 dims: the buffers grow
    std::vector<std::vector<int64_t>> shapes;
    call.clear();
    call.add_int_list({7, 8, 9});
    call.begin_tensor_list();
    for (int k = 0; k < n; ++k) {
      shapes.push_back({});
      for (int d = 0; d <= k % 5; ++d) shapes.back().push_back(k + d + 1);
      call.add_list_tensor(reinterpret_cast<const void*>(static_cast<uintptr_t>(k + 1)),
                           shapes.back().data(), static_cast<int>(shapes.back().size()), 2);
    }
    call.add_output({3, int64_t{n}});
    ASSERT_EQ(call.num_args(), 2);
    EXPECT_EQ(call.list_size(0), 3);
    EXPECT_EQ(call.list_int(0, 2, -1), 9);
    ASSERT_EQ(call.list_size(1), n);
    int64_t bytes = 0;
    for (int k = 0; k < n; ++k) {
      const em::Shape s = call.list_tensor(1, k);
      ASSERT_EQ(s.ndim, static_cast<int>(shapes[k].size())) << k;
      int64_t numel = 1;
      for (int d = 0; d < s.ndim; ++d) {
        EXPECT_EQ(s[d], shapes[k][d]) << k << " " << d;
        numel *= shapes[k][d];
      }
      EXPECT_EQ(s.numel, numel);
      bytes += 2 * numel;
    }
    EXPECT_EQ(call.input_bytes(), bytes);
    EXPECT_EQ(call.output_numel(0), 3 * n);
    EXPECT_EQ(call.output_numel(1), 0);  // no second output
    EXPECT_EQ(call.output_bytes(), 4 * 3 * n);
  }
}

// The op stack moves its frames when it grows; a moved-from OpCall, cleared, captures again.
TEST(Bytes, OpCallMovedFromIsReusable) {
  em::OpCall a;
  a.add_tensor({2, 3});
  em::OpCall b = std::move(a);
  EXPECT_EQ(b.input(0).numel, 6);
  a.clear();
  a.add_tensor({4, 5});
  a.add_output({4, 5, 2});
  EXPECT_EQ(a.input(0).numel, 20);
  EXPECT_EQ(a.input(0)[1], 5);
  EXPECT_EQ(a.output_numel(0), 40);
  a = std::move(b);
  EXPECT_EQ(a.input(0).numel, 6);
  b.clear();
  b.add_int(3);
  EXPECT_EQ(b.int_arg(0, -1), 3);
}

TEST(Table, LookupInPlaceVariantsAndUnknown) {
  EXPECT_EQ(em::find_rule("aten::relu_"), em::find_rule("aten::relu"));
  EXPECT_EQ(em::find_rule("aten::add_"), em::find_rule("aten::add"));
  EXPECT_NE(em::find_rule("aten::copy_"), nullptr);
  EXPECT_EQ(em::find_rule("aten::copy"), nullptr);  // copy_ has its own rule, no base form
  EXPECT_NE(em::find_rule("aten::fill_"), em::find_rule("aten::add"));
  ASSERT_NE(em::find_rule("aten::zero_"), nullptr);
  EXPECT_STREQ(em::find_rule("aten::zero_")->name, "aten::zero_");
  EXPECT_STREQ(em::find_rule("aten::fill_")->name, "aten::fill_");
  em::OpCall zero;  // zero_(self): writes self, reads nothing
  zero.add_tensor({25}, 4);
  zero.add_output({25}, 4);
  em::OpCost c = run("aten::zero_", zero);
  EXPECT_EQ(c.bytes_read, 0);
  EXPECT_EQ(c.bytes_written, 25 * 4);
  EXPECT_EQ(c.flops, 0);
  EXPECT_EQ(em::find_rule("aten::no_such_op"), nullptr);
  EXPECT_EQ(em::find_rule("mylib::addmm"), nullptr);
}

// Collectives: no FLOPs, no memory traffic; nccl-tests' data size S and bus bytes S x factor(n).
namespace {
// A list of `count` float tensors of `numel` elements each (distinct identities).
void add_list(em::OpCall& call, int count, int64_t numel, uintptr_t id0) {
  call.begin_tensor_list();
  for (int k = 0; k < count; ++k) {
    call.add_list_tensor(reinterpret_cast<const void*>(id0 + k), &numel, 1, 4);
  }
}
}  // namespace

TEST(Collective, DataSizeBusBytesGroupSize) {
  const int64_t numel = 1000, s = 4 * numel;
  for (int64_t n : {2, 4, 8}) {
    em::OpCall allreduce;  // allreduce_(tensors, process_group, reduce_op, ...)
    add_list(allreduce, 1, numel, 0x100);
    allreduce.add_int(n);
    allreduce.add_other();
    em::OpCost c = run("c10d::allreduce_", allreduce);
    EXPECT_EQ(c.comm_bytes, s);
    EXPECT_EQ(c.comm_bus_bytes, s * 2 * (n - 1) / n);
    EXPECT_EQ(c.comm_ranks, n);
    EXPECT_EQ(c.flops, 0);
    EXPECT_EQ(c.bytes_read, 0);
    EXPECT_EQ(c.bytes_written, 0);

    em::OpCall allgather;  // allgather_(output_tensors[][] (flat), input_tensors, pg, ...)
    add_list(allgather, static_cast<int>(n), numel, 0x200);
    add_list(allgather, 1, numel, 0x300);
    allgather.add_int(n);
    c = run("c10d::allgather_", allgather);
    EXPECT_EQ(c.comm_bytes, n * s);  // the whole output
    EXPECT_EQ(c.comm_bus_bytes, n * s * (n - 1) / n);

    em::OpCall reduce_scatter;  // _reduce_scatter_base_(output, input, pg, ...)
    int64_t out = numel / n, in = numel;
    reduce_scatter.add_tensor(reinterpret_cast<const void*>(0x400), &out, 1, 4);
    reduce_scatter.add_tensor(reinterpret_cast<const void*>(0x401), &in, 1, 4);
    reduce_scatter.add_int(n);
    c = run("c10d::_reduce_scatter_base_", reduce_scatter);
    EXPECT_EQ(c.comm_bytes, s);  // the whole input
    EXPECT_EQ(c.comm_bus_bytes, s * (n - 1) / n);

    em::OpCall alltoall;  // alltoall_base_(output, input, pg, splits...)
    alltoall.add_tensor(reinterpret_cast<const void*>(0x500), &in, 1, 4);
    alltoall.add_tensor(reinterpret_cast<const void*>(0x501), &in, 1, 4);
    alltoall.add_int(n);
    c = run("c10d::alltoall_base_", alltoall);
    EXPECT_EQ(c.comm_bytes, s);
    EXPECT_EQ(c.comm_bus_bytes, s * (n - 1) / n);

    em::OpCall gather;  // gather_(output_tensors[][], input_tensors, pg, root): n x the input
    add_list(gather, 0, numel, 0x600);  // not the root: no outputs
    add_list(gather, 1, numel, 0x700);
    gather.add_int(n);
    c = run("c10d::gather_", gather);
    EXPECT_EQ(c.comm_bytes, n * s);
    EXPECT_EQ(c.comm_bus_bytes, n * s * (n - 1) / n);

    for (const char* op : {"c10d::broadcast_", "c10d::reduce_", "c10d::send", "c10d::recv_"}) {
      c = run(op, allreduce);
      EXPECT_EQ(c.comm_bytes, s) << op;
      EXPECT_EQ(c.comm_bus_bytes, s) << op;
    }
    em::OpCall barrier;  // barrier(tensor, pg, ...): a placeholder tensor, nothing moved
    barrier.add_tensor({1});
    barrier.add_int(n);
    c = run("c10d::barrier", barrier);
    EXPECT_EQ(c.comm_bytes, 0);
    EXPECT_EQ(c.comm_ranks, n);
  }
  EXPECT_EQ(kind("c10d::allreduce_"), em::OpKind::kCollective);
  EXPECT_TRUE(em::owns_children(*em::find_rule("c10d::allreduce_")));
  // An unknown group size: the data size stays, the bus bytes are unknown (0).
  em::OpCall unknown;
  add_list(unknown, 1, numel, 0x800);
  unknown.add_other();
  em::OpCost c = run("c10d::allreduce_", unknown);
  EXPECT_EQ(c.comm_bytes, s);
  EXPECT_EQ(c.comm_bus_bytes, 0);
  EXPECT_EQ(c.comm_ranks, 0);
}

TEST(Table, EveryRuleIsUniqueAndSafeOnEmptyCalls) {
  std::set<std::string> names;
  const em::OpCall empty;
  for (const em::OpRule& rule : em::all_rules()) {
    std::string name = rule.name;
    const bool c10d = rule.kind == em::OpKind::kCollective;
    // aten, c10d for the collectives, quantized for torch.ao's packed-weight Linear
    const bool quantized = name.rfind("quantized::", 0) == 0;
    EXPECT_TRUE(name.rfind(c10d ? "c10d::" : "aten::", 0) == 0 || (quantized && !c10d)) << name;
    EXPECT_TRUE(names.insert(name).second) << "duplicate rule " << name;
    em::OpCost c = em::evaluate(rule, empty);
    EXPECT_EQ(c.flops, 0) << name;
    EXPECT_GE(c.macs, 0) << name;
    EXPECT_EQ(c.bytes_read, 0) << name;
    EXPECT_EQ(c.bytes_written, 0) << name;
    if (rule.kind == em::OpKind::kMatmul) {
      EXPECT_EQ(c.flops, 2 * c.macs) << name;
    }
  }
  EXPECT_GT(names.size(), 300u);
}

TEST(Table, EveryBuiltInRuleHasAFormula) {
  for (const em::RuleRow& row : em::rule_rows()) {
    if (row.user) continue;
    EXPECT_FALSE(row.formula.empty()) << row.op;
  }
}

// The causal mask torch's CPU kernels and the math path apply: top-left aligned, query i sees
// keys j <= i. Counted here by brute force over the (i, j) grid.
TEST(Effective, CausalKeptPairsMatchesTheGrid) {
  for (int64_t sq : {1, 2, 5, 7, 16, 33}) {
    for (int64_t sk : {1, 3, 5, 7, 16, 40}) {
      int64_t kept = 0;
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t j = 0; j < sk; ++j) kept += j <= i ? 1 : 0;
      }
      EXPECT_EQ(em::causal_kept_pairs(sq, sk), kept) << sq << "x" << sk;
    }
  }
  EXPECT_EQ(em::causal_kept_pairs(4, 4), 4 * 5 / 2);          // square: n(n+1)/2
  EXPECT_EQ(em::causal_kept_pairs(3, 8), 3 * 4 / 2);          // sq < sk: a triangle
  EXPECT_EQ(em::causal_kept_pairs(8, 3), 3 * 4 / 2 + 5 * 3);  // sq > sk: triangle + full rows
  EXPECT_EQ(em::causal_kept_pairs(0, 5), 0);
}

TEST(Effective, AttentionArgsNameTheSchemaPositions) {
  const em::AttentionArgs* sdpa = em::find_attention("aten::scaled_dot_product_attention");
  ASSERT_NE(sdpa, nullptr);
  // scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, ...)
  EXPECT_EQ(sdpa->mask, 3);
  EXPECT_EQ(sdpa->causal, 5);
  const em::AttentionArgs* flash =
      em::find_attention("aten::_scaled_dot_product_flash_attention_for_cpu");
  ASSERT_NE(flash, nullptr);
  EXPECT_EQ(flash->causal, 4);  // (query, key, value, dropout_p, is_causal, *, attn_mask, ...)
  EXPECT_EQ(flash->mask, 5);
  EXPECT_EQ(em::find_attention("aten::mm"), nullptr);
}

TEST(Registered, RegisterOverrideAndRemove) {
  const uint64_t v0 = em::rules_version();
  EXPECT_EQ(em::find_rule("emtest::triple"), nullptr);
  em::register_rule("emtest::triple", em::OpKind::kVector,
                    [](const em::OpCall& c) { return em::OpCost::vector(3 * c.input(0).numel); });
  EXPECT_GT(em::rules_version(), v0);
  const em::OpRule* rule = em::find_rule("emtest::triple");
  ASSERT_NE(rule, nullptr);
  EXPECT_TRUE(rule->user);
  em::OpCall call;
  call.add_tensor({4, 5});
  call.add_output({4, 5});
  em::OpCost c = em::evaluate(*rule, call);
  EXPECT_EQ(c.flops, 3 * 20);
  EXPECT_EQ(c.bytes_read, 20 * 4);  // generic bytes filled by evaluate
  EXPECT_EQ(c.bytes_written, 20 * 4);

  // Override a built-in rule; removal brings the built-in one back.
  const em::OpRule* builtin = em::find_rule("aten::mm");
  em::register_rule(
      "aten::mm", em::OpKind::kMatmul, [](const em::OpCall&) { return em::OpCost::matmul(1); },
      "one MAC");
  EXPECT_NE(em::find_rule("aten::mm"), builtin);
  EXPECT_EQ(em::evaluate(*em::find_rule("aten::mm"), call).macs, 1);
  bool overridden = false, listed = false;
  for (const em::RuleRow& row : em::rule_rows()) {
    if (row.op == "aten::mm" && !row.user) overridden = row.overridden;
    if (row.op == "aten::mm" && row.user) listed = row.formula == "one MAC";
  }
  EXPECT_TRUE(overridden);
  EXPECT_TRUE(listed);
  EXPECT_TRUE(em::unregister_rule("aten::mm"));
  EXPECT_EQ(em::find_rule("aten::mm"), builtin);
  EXPECT_FALSE(em::unregister_rule("aten::mm"));  // nothing registered any more

  EXPECT_TRUE(em::unregister_rule("emtest::triple"));
  EXPECT_EQ(em::find_rule("emtest::triple"), nullptr);
  // A rule that replaced one still works for whoever holds it (a running profiler).
  EXPECT_EQ(em::evaluate(*rule, call).flops, 3 * 20);
}

TEST(Registered, BadRegistrationsSayWhatIsWrong) {
  auto fn = [](const em::OpCall&) { return em::OpCost::none(); };
  EXPECT_THROW(em::register_rule("", em::OpKind::kVector, fn), std::invalid_argument);
  EXPECT_THROW(em::register_rule("emtest::x", em::OpKind::kUnsupported, fn), std::invalid_argument);
  EXPECT_THROW(em::register_rule("emtest::x", em::OpKind::kVector, em::RuleFn{}),
               std::invalid_argument);
  EXPECT_EQ(em::find_rule("emtest::x"), nullptr);
}
