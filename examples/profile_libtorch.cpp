// effmetrics from a LibTorch program, no Python: profile a small CNN classifier's forward,
// print per-module counts, and check the matmul-class MACs against the closed form.
#include <torch/torch.h>

#include <cstdio>

#include "effmetrics/effmetrics.h"

int main() {
  const int64_t N = 4, C = 3, H = 32, W = 32, F = 16, K = 3, classes = 10;
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(C, F, K).padding(1));
  torch::nn::Linear fc(F * (H / 2) * (W / 2), classes);
  torch::NoGradGuard no_grad;
  auto images = torch::randn({N, C, H, W});

  effmetrics::Profiler prof;
  torch::Tensor logits;
  {
    effmetrics::ScopeGuard model("classifier");
    torch::Tensor x;
    {
      effmetrics::ScopeGuard g("classifier.conv");
      x = torch::relu(conv->forward(images));
    }
    x = torch::max_pool2d(x, 2).flatten(1);
    {
      effmetrics::ScopeGuard g("classifier.fc");
      logits = fc->forward(x);
    }
  }
  effmetrics::Report report = prof.stop();

  std::printf("%-20s %14s %14s %12s %12s\n", "module", "FLOPs", "matmul MACs", "read B",
              "written B");
  for (const auto& m : report.modules) {
    const std::string name = m.name.empty() ? "(all)" : std::string(m.name);  // names are views
    std::printf("%-20s %14lld %14lld %12lld %12lld\n", name.c_str(),
                static_cast<long long>(m.total.flops), static_cast<long long>(m.total.macs_matmul),
                static_cast<long long>(m.total.bytes_read),
                static_cast<long long>(m.total.bytes_written));
  }
  const int64_t expected = N * F * C * K * K * H * W                 // conv, same padding
                           + N * (F * (H / 2) * (W / 2)) * classes;  // fc
  std::printf("closed form: %lld\n", static_cast<long long>(expected));
  std::printf("matmul MACs: %lld\n", static_cast<long long>(report.total.macs_matmul));
  if (report.total.macs_matmul != expected || !report.unsupported_ops.empty()) {
    std::fprintf(stderr, "MISMATCH: effmetrics counted %lld matmul MACs, expected %lld\n",
                 static_cast<long long>(report.total.macs_matmul),
                 static_cast<long long>(expected));
    return 1;
  }
  return 0;
}
