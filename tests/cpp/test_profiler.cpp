// The observer end to end from LibTorch: exact counts, modules, backward, threads, nesting,
// exceptions, parameters, exotic tensors. The only test TU with the heavy torch headers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>

#include "effmetrics/effmetrics.h"

namespace em = effmetrics;

namespace {

const em::ModuleRow* module_row(const em::Report& r, const std::string& name) {
  for (const auto& m : r.modules) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

int64_t op_flops(const em::Report& r, const std::string& op, em::Phase phase) {
  int64_t total = 0;
  for (const auto& o : r.ops) {
    if (o.op == op && o.phase == phase) total += o.counts.flops;
  }
  return total;
}

bool no_callbacks_left() { return !at::hasThreadLocalCallbacks() && !at::hasGlobalCallbacks(); }

}  // namespace

TEST(Profiler, MatmulOpsOnCpuAndMeta) {
  for (const char* device : {"cpu", "meta"}) {
    auto opts = torch::TensorOptions().device(device);
    auto a = torch::ones({7, 5}, opts), b = torch::ones({5, 3}, opts);
    auto bias = torch::ones({3}, opts);
    auto x = torch::ones({4, 6, 5}, opts), y = torch::ones({4, 5, 2}, opts);
    em::Profiler prof;
    at::mm(a, b);
    at::addmm(bias, a, b);
    at::bmm(x, y);
    em::Report r = prof.stop();
    EXPECT_EQ(r.total.macs_matmul, 7 * 5 * 3 + 7 * 5 * 3 + 4 * 6 * 5 * 2) << device;
    EXPECT_EQ(r.total.flops_matmul, 2 * r.total.macs_matmul) << device;
    EXPECT_TRUE(r.unsupported_ops.empty()) << device;
  }
}

// A compiler tracing inside a profiled call (torch.compile) pauses the profiler: ops that start
// while paused are not counted, nor is anything below them; counting resumes after.
TEST(Profiler, OpsStartedWhilePausedAreNotCounted) {
  auto a = torch::randn({4, 8}), b = torch::randn({8, 16});
  em::Profiler prof;
  prof.pause();
  torch::mm(a, b);
  torch::linear(a, b.t());  // addmm below linear: not counted either
  prof.resume();
  torch::mm(a, b);
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.flops, 2 * 4 * 8 * 16);  // the one mm after resume()
  EXPECT_EQ(r.total.calls, 1);
}

TEST(Profiler, DetachedOpsAreNotObservedAndCountsAreKept) {
  auto a = torch::randn({4, 8}), b = torch::randn({8, 16});
  const int64_t mm = 2 * 4 * 8 * 16;
  em::Profiler prof;
  torch::mm(a, b);
  EXPECT_EQ(prof.totals().counts.flops, mm);
  prof.detach();
  EXPECT_FALSE(prof.attached());
  torch::mm(a, b);
  torch::mm(a, b);
  prof.detach();  // idempotent
  EXPECT_EQ(prof.totals().counts.flops, mm);
  prof.attach();
  torch::mm(a, b);
  prof.mark_step();  // no device timeline: nothing to mark
  em::Profiler::Totals t = prof.totals();
  EXPECT_EQ(t.counts.flops, 2 * mm);
  EXPECT_EQ(t.counts.calls, 2);
  em::Report r = prof.stop();  // totals() sums what the report does
  EXPECT_EQ(r.total.flops, t.counts.flops);
  EXPECT_EQ(r.total.bytes_read, t.counts.bytes_read);
  em::Profiler detached_at_stop;
  detached_at_stop.detach();
  EXPECT_EQ(detached_at_stop.stop().total.calls, 0);  // stop() of a detached profiler
}

TEST(Profiler, LinearCountsOnceThroughAddmm) {
  auto x = torch::randn({8, 16}), w = torch::randn({32, 16}), b = torch::randn({32});
  em::Profiler prof;
  at::linear(x, w, b);
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.macs, 8 * 16 * 32);
  EXPECT_EQ(op_flops(r, "aten::addmm", em::Phase::kForward), 2 * 8 * 16 * 32);
  // bytes: input, weight and bias read once, the output written once; the transpose is a view
  EXPECT_EQ(r.total.bytes_read, 4 * (8 * 16 + 32 * 16 + 32));
  EXPECT_EQ(r.total.bytes_written, 4 * 8 * 32);
}

TEST(Profiler, LibTorchModulesWithScopes) {
  const int64_t N = 2, L = 10, E = 32, heads = 4;
  torch::nn::Linear lin(16, 24);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(8, 16, 3).padding(1).groups(2));
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(E, heads));
  torch::NoGradGuard no_grad;
  auto xl = torch::randn({5, 16});
  auto xc = torch::randn({N, 8, 12, 12});
  auto xa = torch::randn({L, N, E});  // (L, N, E)

  em::Profiler prof;
  {
    em::ScopeGuard g("lin");
    lin->forward(xl);
  }
  {
    em::ScopeGuard g("conv");
    conv->forward(xc);
  }
  {
    em::ScopeGuard g("attn");
    mha->forward(xa, xa, xa);
  }
  em::Report r = prof.stop();

  ASSERT_NE(module_row(r, "lin"), nullptr);
  EXPECT_EQ(module_row(r, "lin")->total.macs_matmul, 5 * 16 * 24);
  EXPECT_EQ(module_row(r, "lin")->calls, 1);
  // N * Cout * (Cin / groups) * k * k * H * W
  EXPECT_EQ(module_row(r, "conv")->total.macs_matmul, N * 16 * (8 / 2) * 3 * 3 * 12 * 12);
  const int64_t hd = E / heads;
  const int64_t mha_macs = 3 * L * N * E * E         // in-projection
                           + N * heads * L * L * hd  // Q K^T
                           + N * heads * L * L * hd  // A V
                           + L * N * E * E;          // out-projection
  EXPECT_EQ(module_row(r, "attn")->total.macs_matmul, mha_macs);
  EXPECT_EQ(r.total.macs_matmul, 5 * 16 * 24 + N * 16 * 4 * 9 * 144 + mha_macs);
  for (const auto& [op, calls] : r.unsupported_ops) ADD_FAILURE() << "unsupported " << op;
}

TEST(Profiler, CrossAttentionKeyValueLengthDiffersFromQuery) {
  // Query length L, key/value length S (key is value, query is not): in-projection of q is
  // L*N*E*E, of k and v 2*S*N*E*E; attention N*heads*L*S*(2*head_dim); out-projection L*N*E*E.
  const int64_t N = 3, L = 6, S = 11, E = 24, heads = 3, hd = E / heads;
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(E, heads));
  torch::NoGradGuard no_grad;
  auto q = torch::randn({L, N, E}), kv = torch::randn({S, N, E});
  em::Profiler prof;
  {
    em::ScopeGuard g("cross");
    mha->forward(q, kv, kv);
  }
  em::Report r = prof.stop();
  const int64_t expected =
      L * N * E * E + 2 * S * N * E * E + N * heads * L * S * (2 * hd) + L * N * E * E;
  const em::ModuleRow* cross = module_row(r, "cross");
  ASSERT_NE(cross, nullptr);
  std::string ops;
  for (const auto& o : r.ops) (ops += o.op) += " ";
  EXPECT_EQ(cross->total.macs_matmul, expected) << ops;
  EXPECT_EQ(cross->self.macs_matmul, expected);
  EXPECT_EQ(r.total.macs_matmul, expected);
}

TEST(Profiler, LinearModuleBackwardIsTwiceForward) {
  // nn::Linear with bias: forward addmm; backward mm (grad_input) + mm (grad_weight) + a sum
  // for the bias gradient (vector class, not matmul).
  const int64_t B = 5, In = 12, Out = 7;
  torch::nn::Linear lin(In, Out);
  auto x = torch::randn({B, In}, torch::requires_grad());
  em::Profiler prof;
  torch::Tensor y;
  {
    em::ScopeGuard g("fc");
    y = lin->forward(x);
  }
  y.sum().backward();
  em::Report r = prof.stop();
  const int64_t fwd = B * In * Out;
  int64_t fwd_matmul = 0, bwd_matmul = 0, fc_bwd_matmul = 0;
  for (const auto& o : r.ops) {
    if (o.kind != em::OpKind::kMatmul) continue;
    (o.phase == em::Phase::kForward ? fwd_matmul : bwd_matmul) += o.counts.macs;
    if (o.phase == em::Phase::kBackward && o.module == "fc") fc_bwd_matmul += o.counts.macs;
  }
  EXPECT_EQ(fwd_matmul, fwd);
  EXPECT_EQ(bwd_matmul, 2 * fwd);
  EXPECT_EQ(fc_bwd_matmul, 2 * fwd);
  EXPECT_EQ(r.total.macs_matmul, 3 * fwd);
  // flops_backward also holds the bias-gradient sum (B*Out adds) and nothing else counted as a
  // FLOP: the seed is a fill, SumBackward an expand (view).
  EXPECT_EQ(module_row(r, "fc")->total.flops_backward, 2 * 2 * fwd + B * Out);
}

TEST(Profiler, BackwardAttributedToForwardScope) {
  auto x = torch::randn({6, 10}, torch::requires_grad());
  auto w = torch::randn({4, 10}, torch::requires_grad());
  em::Profiler prof;
  torch::Tensor y;
  {
    em::ScopeGuard g("lin");
    y = at::linear(x, w);
  }
  y.sum().backward();  // outside the scope: backward ops find "lin" through seqNr
  em::Report r = prof.stop();
  const int64_t fwd = 2 * 6 * 10 * 4;
  EXPECT_EQ(r.total.flops_matmul, 3 * fwd);  // forward, grad_input, grad_weight
  const em::ModuleRow* lin = module_row(r, "lin");
  ASSERT_NE(lin, nullptr);
  EXPECT_EQ(lin->total.flops_matmul, 3 * fwd);
  int64_t lin_backward_matmul = 0;
  for (const auto& o : r.ops) {
    if (o.module == "lin" && o.phase == em::Phase::kBackward && o.kind == em::OpKind::kMatmul) {
      lin_backward_matmul += o.counts.flops;
    }
  }
  EXPECT_EQ(lin_backward_matmul, 2 * fwd);
  EXPECT_EQ(lin->total.flops_forward - lin->self.flops_vector, fwd);  // vector: none in "lin"
  EXPECT_EQ(lin->self.flops_vector, 0);
  EXPECT_EQ(op_flops(r, "aten::mm", em::Phase::kBackward), 2 * fwd);
}

TEST(Profiler, TwoThreadsEachWithItsOwnProfiler) {
  auto work = [](int64_t n, int reps, em::Report* out) {
    auto a = torch::ones({n, n}), b = torch::ones({n, n});
    em::Profiler prof;
    for (int i = 0; i < reps; ++i) at::mm(a, b);
    *out = prof.stop();
  };
  em::Report r1, r2;
  std::thread t1(work, 16, 200, &r1), t2(work, 24, 150, &r2);
  t1.join();
  t2.join();
  EXPECT_EQ(r1.total.macs, 200 * 16 * 16 * 16);
  EXPECT_EQ(r2.total.macs, 150 * 24 * 24 * 24);
  EXPECT_EQ(r1.total.calls, 200);
  EXPECT_EQ(r2.total.calls, 150);
}

TEST(Profiler, AllThreadsObservesWorkerThreads) {
  em::ProfilerOptions opts;
  opts.all_threads = true;
  em::Profiler prof(opts);
  auto work = [](int64_t n) {
    auto a = torch::ones({n, n}), b = torch::ones({n, n});
    for (int i = 0; i < 10; ++i) at::mm(a, b);
  };
  std::thread t1(work, 8), t2(work, 12);
  t1.join();
  t2.join();
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.macs, 10 * 8 * 8 * 8 + 10 * 12 * 12 * 12);
  EXPECT_TRUE(no_callbacks_left());
}

TEST(Profiler, NestedProfilersBothCount) {
  auto a = torch::ones({4, 4});
  em::Profiler outer;
  at::mm(a, a);
  em::Report inner_report;
  {
    em::Profiler inner;
    at::mm(a, a);
    at::mm(a, a);
    inner_report = inner.stop();
  }
  at::mm(a, a);
  em::Report outer_report = outer.stop();
  EXPECT_EQ(inner_report.total.macs, 2 * 64);
  EXPECT_EQ(outer_report.total.macs, 4 * 64);
}

TEST(Profiler, ExceptionInsideProfiledRegion) {
  auto a = torch::ones({3, 3}), bad = torch::ones({4, 5});
  const size_t depth = em::scope_depth();
  em::Profiler prof;
  bool threw = false;
  try {
    em::ScopeGuard g("block");
    at::mm(a, a);
    at::mm(a, bad);  // shape mismatch: throws inside the op
  } catch (const c10::Error&) {
    threw = true;
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(em::scope_depth(), depth);
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.macs, 27);  // the mm before the failure; the failed mm did no work
  EXPECT_TRUE(no_callbacks_left());
  em::Profiler again;
  at::mm(a, a);
  EXPECT_EQ(again.stop().total.macs, 27);
}

TEST(Profiler, StopFromAnotherThreadIsAClearError) {
  em::Profiler prof;
  std::string message;
  std::thread t([&] {
    try {
      prof.stop();
    } catch (const std::runtime_error& e) {
      message = e.what();
    }
  });
  t.join();
  EXPECT_NE(message.find("thread that started it"), std::string::npos) << message;
  prof.stop();
  EXPECT_TRUE(no_callbacks_left());
}

TEST(Profiler, TooManyProfilersIsAClearError) {
  std::vector<std::unique_ptr<em::Profiler>> held;
  for (int i = 0; i < em::Profiler::kMaxProfilers; ++i) {
    held.push_back(std::make_unique<em::Profiler>());
  }
  try {
    em::Profiler one_more;
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("already active"), std::string::npos);
  }
  held.clear();
  EXPECT_TRUE(no_callbacks_left());
}

TEST(Profiler, WatchedParametersAppliedAndTouched) {
  torch::nn::Linear lin(8, 4), unused(8, 4);
  torch::NoGradGuard no_grad;
  em::Profiler prof(em::ProfilerOptions{}, /*start_now=*/false);
  for (auto* m : {&lin, &unused}) {
    for (auto& p : (*m)->parameters()) prof.watch(p.unsafeGetTensorImpl(), p.numel());
  }
  prof.start();
  auto x = torch::randn({2, 8});
  lin->forward(lin->forward(x).repeat({1, 2}));
  em::Report r = prof.stop();
  EXPECT_EQ(r.params_applied, 2 * (8 * 4 + 4));
  EXPECT_EQ(r.params_touched, 8 * 4 + 4);
}

TEST(Profiler, ComplexSparseQuantizedTensors) {
  {
    em::Profiler prof;
    at::mm(torch::randn({3, 4}, torch::kComplexFloat), torch::randn({4, 2}, torch::kComplexFloat));
    em::Report r = prof.stop();
    EXPECT_EQ(r.total.macs, 3 * 4 * 2);
    EXPECT_EQ(op_flops(r, "aten::mm", em::Phase::kForward), 2 * 3 * 4 * 2);
  }
  em::Profiler prof;
  auto sparse = torch::eye(5).to_sparse();
  EXPECT_NO_THROW(at::mm(sparse, torch::randn({5, 3})));
  EXPECT_NO_THROW(at::quantize_per_tensor(torch::randn({4, 4}), 0.1, 0, at::kQUInt8).dequantize());
  em::Report r;
  EXPECT_NO_THROW(r = prof.stop());
  // sparse work is listed, not guessed from dense shapes
  EXPECT_EQ(r.total.flops_matmul, 0);
  EXPECT_FALSE(r.unsupported_ops.empty());
}

TEST(MemoryTracker, PeakOfAllocationsDuringTheRegion) {
  auto before = torch::ones({1000});  // allocated before: not part of the peak
  em::MemoryTracker tracker;
  tracker.start();
  {
    auto a = torch::empty({1 << 10});  // 4 KiB
    auto b = torch::empty({1 << 12});  // 16 KiB, while a is alive: 20 KiB
  }
  auto c = torch::empty({1 << 11});  // 8 KiB after both were freed
  before = torch::Tensor();          // the CPU allocator reports no free of what it did not track
  tracker.stop();
  EXPECT_EQ(tracker.peak_bytes("cpu"), 4 * ((1 << 10) + (1 << 12)));
  EXPECT_EQ(tracker.current_bytes("cpu"), 4 * (1 << 11));
  EXPECT_EQ(tracker.peak_bytes("cuda"), 0);
  EXPECT_THROW(tracker.peak_bytes("tpu"), std::invalid_argument);
}

namespace {

// A device timeline whose marks are stamped 1 us apart in the order they are made, on the CPU
// "device": the spans, steps and module times below follow from which ops get marks.
class ScriptedTimeline final : public em::DeviceTimeline {
 public:
  int8_t device_type() const override { return 0; }  // c10::DeviceType::CPU
  std::string clock() const override { return "scripted"; }
  uint32_t mark() override {
    stamps_.push_back(1000 * static_cast<int64_t>(stamps_.size()));
    return static_cast<uint32_t>(stamps_.size() - 1);
  }
  bool done(uint32_t) override { return true; }
  void wait(uint32_t) override {}
  int64_t elapsed_ns(uint32_t from, uint32_t to) override { return stamps_[to] - stamps_[from]; }
  void release(uint32_t) override { ++released; }
  int released = 0;

 private:
  std::vector<int64_t> stamps_;
};

em::ProfilerOptions scripted(std::shared_ptr<ScriptedTimeline> tl, bool time_ops) {
  em::ProfilerOptions o;
  o.time = true;
  o.time_ops = time_ops;
  o.timeline = std::move(tl);
  return o;
}

int64_t op_time(const em::Report& r, const std::string& op) {
  int64_t t = 0;
  for (const auto& o : r.ops) {
    if (o.op == op) t += o.counts.time_ns;
  }
  return t;
}

}  // namespace

TEST(DeviceTimeline, OutermostOpSpansStepsAndModules) {
  auto x = torch::randn({4, 8}), w = torch::randn({16, 8}), b = torch::randn({16});
  auto y = torch::randn({4, 16});
  auto tl = std::make_shared<ScriptedTimeline>();
  em::Profiler prof(scripted(tl, false));  // mark 0: step 0 begins
  {
    em::ScopeGuard g("lin");
    at::linear(x, w, b);  // outermost: marks 1, 2 (t, addmm inside it get none)
  }
  at::relu(y);                      // marks 3, 4
  em::Report s0 = prof.snapshot();  // mark 5 ends step 0, mark 6 begins step 1
  EXPECT_EQ(s0.busy_ns, 2000);
  EXPECT_TRUE(s0.device_steps.empty());  // snapshots: the steps come from device_steps()
  std::vector<em::DeviceStep> steps = prof.device_steps(/*wait=*/false);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].wall_ns, 5000);
  EXPECT_EQ(steps[0].busy_ns, 2000);
  EXPECT_EQ(steps[0].idle_ns, 3000);
  EXPECT_TRUE(prof.device_steps(false, /*first=*/1).empty());
  at::mm(y, w);                // marks 7, 8
  em::Report r = prof.stop();  // mark 9 ends step 1
  ASSERT_EQ(r.device_steps.size(), 2u);
  EXPECT_EQ(r.device_steps[1].wall_ns, 3000);
  EXPECT_EQ(r.device_steps[1].busy_ns, 1000);
  EXPECT_EQ(r.clock, "scripted");
  EXPECT_FALSE(r.op_times);
  EXPECT_EQ(r.wall_ns, 8000);
  EXPECT_EQ(r.busy_ns, 3000);
  EXPECT_EQ(module_row(r, "lin")->self.time_ns, 1000);
  EXPECT_EQ(module_row(r, "")->self.time_ns, 2000);  // relu and mm
  EXPECT_EQ(module_row(r, "")->total.time_ns, 3000);
  EXPECT_EQ(r.total.time_ns, 3000);
  EXPECT_EQ(op_time(r, "aten::addmm"), 0);  // per-op times need time_ops
  EXPECT_EQ(tl->released, 10);              // every mark given back
}

TEST(DeviceTimeline, TimeOpsMarksEveryCountedOp) {
  auto x = torch::randn({4, 8}), w = torch::randn({16, 8}), b = torch::randn({16});
  auto y = torch::randn({4, 16});
  auto tl = std::make_shared<ScriptedTimeline>();
  em::Profiler prof(scripted(tl, true));  // mark 0
  {
    em::ScopeGuard g("lin");
    at::linear(x, w, b);  // linear 1 .. 4 around addmm 2, 3 (t is a view: no device work)
  }
  at::relu(y);                 // outermost and counted: one pair, 5, 6
  em::Report r = prof.stop();  // 7
  EXPECT_TRUE(r.op_times);
  EXPECT_EQ(op_time(r, "aten::addmm"), 1000);
  EXPECT_EQ(op_time(r, "aten::relu"), 1000);
  EXPECT_EQ(op_time(r, "aten::t"), 0);
  EXPECT_EQ(module_row(r, "lin")->self.time_ns, 3000);  // linear's own span
  EXPECT_EQ(r.busy_ns, 4000);
  EXPECT_EQ(r.wall_ns, 7000);
}

TEST(DeviceTimeline, OpsOnAnotherDeviceAreNotOnTheTimeline) {
  auto a = torch::ones({7, 5}, torch::kMeta), c = torch::ones({5, 3}, torch::kMeta);
  auto tl = std::make_shared<ScriptedTimeline>();
  em::Profiler prof(scripted(tl, true));
  at::mm(a, c);
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.macs, 7 * 5 * 3);  // counted as always
  EXPECT_EQ(r.busy_ns, 0);             // but no span: the CPU timeline saw no work
  EXPECT_EQ(r.wall_ns, 1000);
}

TEST(DeviceTimeline, HostSleepBetweenOpsIsIdle) {
  auto a = torch::randn({128, 128});
  em::ProfilerOptions o;
  o.time = true;
  o.device = "cpu";  // the steady-clock timeline
  em::Profiler prof(o);
  at::mm(a, a);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  at::mm(a, a);
  em::Report r = prof.stop();
  ASSERT_EQ(r.device_steps.size(), 1u);
  const em::DeviceStep& s = r.device_steps[0];
  EXPECT_GE(s.idle_ns, 30'000'000);
  EXPECT_GT(s.busy_ns, 0);
  EXPECT_EQ(s.wall_ns, s.busy_ns + s.idle_ns);
  EXPECT_EQ(r.clock, "steady_clock");
  EXPECT_THROW(prof.device_steps(true), std::runtime_error);  // not running
  em::Profiler host;  // host clocks: no device steps to ask for
  EXPECT_THROW(host.device_steps(true), std::runtime_error);
  host.stop();
}

TEST(TensorFacts, GroupsViewsOfOneMemoryAndReadsNumelAndRequiresGrad) {
  torch::Tensor w = torch::zeros({4, 3}).requires_grad_(true);
  torch::Tensor alias = w.detach();                // another tensor, same storage, same view
  torch::Tensor row = w.detach().narrow(0, 1, 2);  // same storage, another view
  torch::Tensor other = torch::zeros({4, 3});
  torch::Tensor meta_a = torch::empty({5}, torch::kMeta), meta_b = torch::empty({5}, torch::kMeta);
  torch::Tensor row_again = w.detach().narrow(0, 1, 2);  // the view `row` is, a later tensor
  const std::vector<const c10::TensorImpl*> list = {
      w.unsafeGetTensorImpl(),      other.unsafeGetTensorImpl(),    w.unsafeGetTensorImpl(),
      alias.unsafeGetTensorImpl(),  row.unsafeGetTensorImpl(),      meta_a.unsafeGetTensorImpl(),
      meta_b.unsafeGetTensorImpl(), row_again.unsafeGetTensorImpl()};
  em::TensorFacts f = em::tensor_facts(list);
  EXPECT_EQ(f.first, (std::vector<int64_t>{0, 1, 0, 0, 4, 5, 6, 4}));
  EXPECT_EQ(f.numel, (std::vector<int64_t>{12, 12, 12, 12, 6, 5, 5, 6}));
  EXPECT_EQ(f.requires_grad, (std::vector<char>{1, 0, 1, 0, 0, 0, 0, 0}));
}

// Registering and removing rules from another thread while a profile runs: no crash, no torn
// rule; the registration is in effect for the next profile (rules.h: register_rule).
TEST(Profiler, RegistrationWhileProfilingIsSafe) {
  auto a = torch::randn({6, 4}), b = torch::randn({4, 5});
  const int64_t dense = 6 * 4 * 5;
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    int k = 0;
    while (!stop.load()) {
      em::register_rule(
          "aten::mm", em::OpKind::kMatmul, [](const em::OpCall&) { return em::OpCost::matmul(1); },
          "one MAC");
      em::register_rule("emtest::churn" + std::to_string(k++ % 4), em::OpKind::kVector,
                        [](const em::OpCall&) { return em::OpCost::vector(1); });
      em::unregister_rule("aten::mm");
    }
  });
  for (int round = 0; round < 20; ++round) {
    em::Profiler prof;
    for (int i = 0; i < 50; ++i) torch::mm(a, b);
    em::Report r = prof.stop();
    // A thread resolves an op name once per profile: every call by the same rule, the
    // built-in one or the override, never a mix.
    const int64_t macs = r.total.macs_matmul;
    EXPECT_EQ(r.total.calls, 50);
    EXPECT_TRUE(macs == 50 * dense || macs == 50) << macs;
    EXPECT_TRUE(r.unsupported_ops.empty());
  }
  stop = true;
  churn.join();
  em::unregister_rule("aten::mm");
  {
    em::Profiler prof;
    torch::mm(a, b);
    EXPECT_EQ(prof.stop().total.macs, dense);  // the built-in rule again
  }
  em::register_rule(
      "aten::mm", em::OpKind::kMatmul, [](const em::OpCall&) { return em::OpCost::matmul(1); },
      "one MAC");
  {
    em::Profiler prof;
    torch::mm(a, b);
    EXPECT_EQ(prof.stop().total.macs, 1);  // in effect for the next profile
  }
  em::unregister_rule("aten::mm");
}

// Two ops whose kernels run an ATen matmul: one a CPU kernel of its own, one a composite.
TORCH_LIBRARY(em_cpp_kernel_test, m) {
  m.def("own_mm(Tensor a, Tensor b) -> Tensor");
  m.def("composite_mm(Tensor a, Tensor b) -> Tensor");
}
TORCH_LIBRARY_IMPL(em_cpp_kernel_test, CPU, m) {
  m.impl("own_mm", [](const at::Tensor& a, const at::Tensor& b) { return at::mm(a, b); });
}
TORCH_LIBRARY_IMPL(em_cpp_kernel_test, CompositeExplicitAutograd, m) {
  m.impl("composite_mm", [](const at::Tensor& a, const at::Tensor& b) { return at::mm(a, b); });
}

// An op with a kernel of its own and no rule is listed even where the ATen ops inside it
// counted FLOPs (they count as themselves): its kernel may compute outside ATen. A composite
// op, or one registered as composite, is counted by the ops it runs and not listed.
TEST(Profiler, OwnKernelWithoutRuleIsListedWhateverRanInsideIt) {
  auto a = torch::randn({6, 4}), b = torch::randn({4, 5});
  auto call = [&](const char* op) {
    c10::Dispatcher::singleton()
        .findSchemaOrThrow(op, "")
        .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>()
        .call(a, b);
  };
  auto profile = [&](const char* op) {
    em::Profiler prof;
    call(op);
    return prof.stop();
  };
  em::Report r = profile("em_cpp_kernel_test::own_mm");
  EXPECT_EQ(r.total.macs, 6 * 4 * 5);
  ASSERT_EQ(r.unsupported_ops.size(), 1u);
  EXPECT_EQ(r.unsupported_ops.count("em_cpp_kernel_test::own_mm"), 1u);
  r = profile("em_cpp_kernel_test::composite_mm");
  EXPECT_EQ(r.total.macs, 6 * 4 * 5);
  EXPECT_TRUE(r.unsupported_ops.empty());
  em::register_rule("em_cpp_kernel_test::own_mm", em::OpKind::kComposite, nullptr);
  r = profile("em_cpp_kernel_test::own_mm");
  EXPECT_EQ(r.total.macs, 6 * 4 * 5);
  EXPECT_TRUE(r.unsupported_ops.empty());
  em::unregister_rule("em_cpp_kernel_test::own_mm");
}

// flops_effective end to end: a causal SDPA's matmul work counts the kept (i, j) pairs only;
// the dense flops stay as they were.
TEST(Profiler, CausalAttentionEffectiveFlops) {
  const int64_t b = 2, h = 3, sq = 5, sk = 9, d = 8;
  auto q = torch::randn({b, h, sq, d}), k = torch::randn({b, h, sk, d}),
       v = torch::randn({b, h, sk, d});
  em::Profiler prof;
  at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  em::Report r = prof.stop();
  int64_t kept = 0;  // top-left: query i attends keys j <= i
  for (int64_t i = 0; i < sq; ++i) kept += std::min(i + 1, sk);
  EXPECT_EQ(r.total.flops_matmul, 2 * b * h * sq * sk * (d + d));
  EXPECT_EQ(r.total.flops_effective - (r.total.flops - r.total.flops_matmul),
            2 * b * h * kept * (d + d));
  EXPECT_EQ(std::count(r.effective_basis.begin(), r.effective_basis.end(), "causal"), 1);
}

// A share set on the thread (flex_attention's block mask, set from Python) scales the matmul
// work of the ops run while it is set, and only theirs.
TEST(Profiler, AttentionShareScalesMatmulsWhileSet) {
  auto a = torch::randn({8, 16}), b = torch::randn({16, 4});
  const int64_t mm = 2 * 8 * 16 * 4;
  em::Profiler prof;
  EXPECT_EQ(em::set_attention_share(3, 8), std::make_pair(int64_t{0}, int64_t{0}));
  torch::mm(a, b);
  torch::relu(a);  // vector work: unchanged
  EXPECT_EQ(em::set_attention_share(0, 0), std::make_pair(int64_t{3}, int64_t{8}));
  torch::mm(a, b);  // after: dense
  em::Report r = prof.stop();
  EXPECT_EQ(r.total.flops_matmul, 2 * mm);
  EXPECT_EQ(r.total.flops_effective - (r.total.flops - r.total.flops_matmul), mm * 3 / 8 + mm);
  EXPECT_EQ(std::count(r.effective_basis.begin(), r.effective_basis.end(), "block_mask"), 1);
  EXPECT_THROW(em::set_attention_share(5, 4), std::invalid_argument);
}
