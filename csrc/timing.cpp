#include "effmetrics/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <numeric>
#include <stdexcept>

#include "effmetrics/scope.h"  // steady_now_ns

namespace effmetrics {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

TimingStats summarize(std::vector<double> samples) {
  TimingStats s;
  s.n = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.min = samples.front();
  s.max = samples.back();
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  double ss = 0;
  for (double x : samples) ss += (x - s.mean) * (x - s.mean);
  s.std = samples.size() > 1 ? std::sqrt(ss / (samples.size() - 1)) : 0.0;
  s.median = percentile(samples, 50);
  s.p10 = percentile(samples, 10);
  s.p90 = percentile(samples, 90);
  s.p99 = percentile(samples, 99);
  s.iqr = percentile(samples, 75) - percentile(samples, 25);
  return s;
}

bool autorange_done(const std::vector<double>& samples, double elapsed,
                    const BenchmarkOptions& options) {
  if (elapsed >= options.max_run_time) return true;
  if (static_cast<int>(samples.size()) < options.min_runs || elapsed < options.min_run_time) {
    return false;
  }
  TimingStats s = summarize(samples);
  return s.median > 0 && s.iqr / s.median <= options.iqr_tolerance;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

class CpuTimer final : public RunTimer {
 public:
  void start() override { t0_ = Clock::now(); }
  double stop() override { return seconds_since(t0_); }
  std::string clock() const override { return "steady_clock"; }

 private:
  Clock::time_point t0_;
};

// Marks stamped with the steady clock when they are made: already "done".
class HostTimeline final : public DeviceTimeline {
 public:
  explicit HostTimeline(int8_t device_type) : device_type_(device_type) {}
  int8_t device_type() const override { return device_type_; }
  std::string clock() const override { return "steady_clock"; }
  uint32_t mark() override {
    const int64_t now = steady_now_ns();
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      stamps_[id] = now;
    } else {
      id = static_cast<uint32_t>(stamps_.size());
      stamps_.push_back(now);
    }
    return id;
  }
  bool done(uint32_t) override { return true; }
  void wait(uint32_t) override {}
  int64_t elapsed_ns(uint32_t from, uint32_t to) override {
    std::lock_guard<std::mutex> lock(mu_);
    return stamps_.at(to) - stamps_.at(from);
  }
  void release(uint32_t m) override {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(m);
  }

 private:
  const int8_t device_type_;
  std::mutex mu_;
  std::vector<int64_t> stamps_;
  std::vector<uint32_t> free_;
};

}  // namespace

BusySplit split_busy(std::vector<Interval> spans, int64_t begin, int64_t end) {
  BusySplit s;
  s.wall_ns = std::max<int64_t>(end - begin, 0);
  std::sort(spans.begin(), spans.end(),
            [](const Interval& a, const Interval& b) { return a.start_ns < b.start_ns; });
  int64_t covered_to = begin;  // everything before this is already counted
  for (const Interval& i : spans) {
    int64_t lo = std::max(i.start_ns, covered_to);
    int64_t hi = std::min(i.end_ns, end);
    if (hi > lo) {
      s.busy_ns += hi - lo;
      covered_to = hi;
    }
  }
  s.idle_ns = s.wall_ns - s.busy_ns;
  return s;
}

std::unique_ptr<DeviceTimeline> make_host_timeline(int8_t device_type) {
  return std::make_unique<HostTimeline>(device_type);
}

std::unique_ptr<RunTimer> make_cpu_timer() { return std::make_unique<CpuTimer>(); }

std::unique_ptr<RunTimer> make_timer(const BenchmarkOptions& options) {
  if (options.device == "cpu") return make_cpu_timer();
  if (options.device.rfind("cuda", 0) == 0) {
    return make_device_timer(options.device, options.l2_flush);
  }
  throw std::invalid_argument("effmetrics::benchmark: device must be 'cpu' or 'cuda[:i]'; got '" +
                              options.device + "'");
}

BenchmarkResult benchmark(const std::function<void()>& fn, const BenchmarkOptions& options,
                          RunTimer* timer) {
  if (options.max_run_time < options.min_run_time) {
    throw std::invalid_argument(
        "effmetrics::benchmark: max_run_time (" + std::to_string(options.max_run_time) +
        ") must be >= min_run_time (" + std::to_string(options.min_run_time) + ")");
  }
  std::unique_ptr<RunTimer> owned;
  if (timer == nullptr) {
    owned = make_timer(options);
    timer = owned.get();
  }
  auto run = [&] {
    timer->before_run();
    timer->start();
    fn();
    return timer->stop();
  };
  auto t_warm = Clock::now();
  double warm = 0;  // the last warm-up run's time
  for (int i = 0; i < options.warmup || seconds_since(t_warm) < options.warmup_time; ++i) {
    warm = run();
    if (timer->deferred()) warm = timer->drain().at(0);
  }
  // Deferred timers queue runs in chunks: the first as long as min_run_time (no stopping
  // decision can come earlier, and the device runs them back to back, as do_bench and
  // torch.cuda.Event loops do), then a tenth of it (1 to 1000 runs each).
  auto runs_for = [&](double seconds, double most) {
    return static_cast<int>(std::clamp(std::ceil(seconds / std::max(warm, 1e-9)), 1.0, most));
  };
  int chunk = timer->deferred() ? runs_for(options.min_run_time, 100000.0) : 1;
  BenchmarkResult r;
  r.clock = timer->clock();
  auto t0 = Clock::now();
  double measured = 0;  // the rule runs on measured time, so a scripted clock tests it exactly
  do {
    if (timer->deferred()) {
      for (int k = 0; k < chunk; ++k) run();
      for (double s : timer->drain()) {
        r.samples.push_back(s);
        measured += s;
      }
      chunk = runs_for(0.1 * options.min_run_time, 1000.0);
    } else {
      r.samples.push_back(run());
      measured += r.samples.back();
    }
    // max_run_time also bounds the wall clock: for sub-microsecond work the time between runs
    // dominates, and measured time alone would take far longer to reach it.
  } while (!autorange_done(r.samples, measured, options) &&
           seconds_since(t0) < options.max_run_time);
  r.total_time = seconds_since(t0);
  r.stats = summarize(r.samples);
  return r;
}

}  // namespace effmetrics
