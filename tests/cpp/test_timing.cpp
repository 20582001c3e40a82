// Timing statistics on synthetic samples, the autorange rule, the benchmark loop with a scripted
// clock. Expected values are worked out by hand in each test.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <stdexcept>
#include <thread>

#include "comm.h"
#include "effmetrics/timing.h"

namespace em = effmetrics;

TEST(Timing, ExactPercentilesAndMoments) {
  // 1..10 shuffled: rank q/100 * 9 -> p10 = 1 + 0.9 = 1.9, median 5.5, p90 = 9.1, p99 = 9.91,
  // p25 = 3.25, p75 = 7.75 -> iqr 4.5; mean 5.5, sample std sqrt(82.5 / 9)
  std::vector<double> xs = {7, 3, 10, 1, 5, 9, 2, 8, 4, 6};
  em::TimingStats s = em::summarize(xs);
  EXPECT_EQ(s.n, 10);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 10);
  EXPECT_DOUBLE_EQ(s.median, 5.5);
  EXPECT_DOUBLE_EQ(s.mean, 5.5);
  EXPECT_NEAR(s.p10, 1.9, 1e-12);
  EXPECT_NEAR(s.p90, 9.1, 1e-12);
  EXPECT_NEAR(s.p99, 9.91, 1e-12);
  EXPECT_NEAR(s.iqr, 4.5, 1e-12);
  EXPECT_NEAR(s.std, std::sqrt(82.5 / 9.0), 1e-12);
}

TEST(Timing, PercentileEdgeCases) {
  EXPECT_EQ(em::summarize({}).n, 0);
  em::TimingStats one = em::summarize({0.25});
  EXPECT_DOUBLE_EQ(one.median, 0.25);
  EXPECT_DOUBLE_EQ(one.p99, 0.25);
  EXPECT_DOUBLE_EQ(one.std, 0.0);
  EXPECT_DOUBLE_EQ(em::percentile({1, 3}, 50), 2.0);
  EXPECT_DOUBLE_EQ(em::percentile({1, 3}, 0), 1.0);
  EXPECT_DOUBLE_EQ(em::percentile({1, 3}, 100), 3.0);
}

TEST(Timing, AutorangeRule) {
  em::BenchmarkOptions o;
  o.min_runs = 5;
  o.min_run_time = 1.0;
  o.max_run_time = 10.0;
  o.iqr_tolerance = 0.05;
  std::vector<double> stable(5, 0.3);                              // iqr 0
  EXPECT_FALSE(em::autorange_done({0.3, 0.3, 0.3, 0.3}, 1.2, o));  // too few runs
  EXPECT_FALSE(em::autorange_done(stable, 0.9, o));                // too little time
  EXPECT_TRUE(em::autorange_done(stable, 1.5, o));
  // 1, 1, 1, 2, 2: p25 = 1, p75 = 2, median 1 -> iqr/median = 1 > 0.05: keep going ...
  std::vector<double> noisy = {1, 1, 1, 2, 2};
  EXPECT_FALSE(em::autorange_done(noisy, 7, o));
  EXPECT_TRUE(em::autorange_done(noisy, 10, o));  // ... until max_run_time
}

namespace {

// Returns scripted durations, one per run, cycling.
class ScriptedTimer : public em::RunTimer {
 public:
  explicit ScriptedTimer(std::vector<double> script) : script_(std::move(script)) {}
  void before_run() override { ++prepared; }
  void start() override {}
  double stop() override { return script_[i_++ % script_.size()]; }
  std::string clock() const override { return "scripted"; }
  int prepared = 0;

 private:
  std::vector<double> script_;
  size_t i_ = 0;
};

}  // namespace

TEST(Timing, BenchmarkStopsWhenStable) {
  em::BenchmarkOptions o;
  o.warmup = 2;
  o.warmup_time = 0;
  o.min_runs = 4;
  o.min_run_time = 0.5;
  o.max_run_time = 100;
  o.iqr_tolerance = 0.01;
  ScriptedTimer timer({0.1});
  int calls = 0;
  em::BenchmarkResult r = em::benchmark([&] { ++calls; }, o, &timer);
  // 0.1 s per run: min_runs (4) reached at 0.4 s, min_run_time (0.5 s) at the 5th run
  EXPECT_EQ(r.samples.size(), 5u);
  EXPECT_EQ(calls, 2 + 5);
  EXPECT_EQ(timer.prepared, 2 + 5);
  EXPECT_DOUBLE_EQ(r.stats.median, 0.1);
  EXPECT_EQ(r.clock, "scripted");
}

TEST(Timing, BenchmarkStopsAtMaxRunTimeWhenNoisy) {
  em::BenchmarkOptions o;
  o.warmup = 0;
  o.warmup_time = 0;
  o.min_runs = 2;
  o.min_run_time = 0.1;
  o.max_run_time = 3.0;
  o.iqr_tolerance = 0.01;
  ScriptedTimer timer({0.1, 0.2});  // never within 1%
  em::BenchmarkResult r = em::benchmark([] {}, o, &timer);
  // 0.1 + 0.2 per pair: 3.0 s are reached after 20 runs
  EXPECT_EQ(r.samples.size(), 20u);
  EXPECT_DOUBLE_EQ(r.stats.min, 0.1);
  EXPECT_DOUBLE_EQ(r.stats.max, 0.2);
}

TEST(Timing, BadOptionsAreClearErrors) {
  em::BenchmarkOptions o;
  o.min_run_time = 2;
  o.max_run_time = 1;
  EXPECT_THROW(em::benchmark([] {}, o), std::invalid_argument);
  em::BenchmarkOptions d;
  d.device = "tpu";
  try {
    em::benchmark([] {}, d);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'cpu' or 'cuda"), std::string::npos);
  }
}

TEST(Timing, CpuClockMeasuresASleep) {
  auto timer = em::make_cpu_timer();
  timer->start();
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  while (std::chrono::steady_clock::now() < until) {
  }
  double s = timer->stop();
  EXPECT_GE(s, 0.020);
  EXPECT_LT(s, 0.5);
}

TEST(Timing, SplitBusyUnionOfSpansClippedToTheStep) {
  // [100, 200] with spans [110,130] and [120,140] (overlapping: [110,140] = 30), [150,160] (10),
  // [190,250] (clipped to [190,200]: 10), [50,90] (before the step: 0), unsorted.
  em::BusySplit s =
      em::split_busy({{150, 160}, {110, 130}, {190, 250}, {120, 140}, {50, 90}}, 100, 200);
  EXPECT_EQ(s.wall_ns, 100);
  EXPECT_EQ(s.busy_ns, 50);
  EXPECT_EQ(s.idle_ns, 50);
  // A span nested in another counts once; touching spans do not overlap.
  s = em::split_busy({{0, 100}, {20, 30}, {100, 120}}, 0, 200);
  EXPECT_EQ(s.busy_ns, 120);
  EXPECT_EQ(s.idle_ns, 80);
  // No work: all idle. An empty or inverted step: nothing.
  s = em::split_busy({}, 10, 70);
  EXPECT_EQ(s.busy_ns, 0);
  EXPECT_EQ(s.idle_ns, 60);
  s = em::split_busy({{0, 10}}, 50, 40);
  EXPECT_EQ(s.wall_ns, 0);
  EXPECT_EQ(s.busy_ns, 0);
  EXPECT_EQ(s.idle_ns, 0);
}

TEST(Timing, HostTimelineMarksAreSteadyClockStamps) {
  auto tl = em::make_host_timeline();
  uint32_t a = tl->mark();
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  uint32_t b = tl->mark();
  EXPECT_TRUE(tl->done(b));
  EXPECT_GE(tl->elapsed_ns(a, b), 10'000'000);
  EXPECT_LT(tl->elapsed_ns(a, b), 500'000'000);
  EXPECT_EQ(tl->elapsed_ns(b, a), -tl->elapsed_ns(a, b));
  tl->release(a);
  EXPECT_EQ(tl->mark(), a);  // released marks are reused
  EXPECT_EQ(tl->clock(), "steady_clock");
}

TEST(Timing, DeviceTimelineOnAnAbsentDeviceIsAClearError) {
  try {
    em::make_device_timeline("cuda:7");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not available"), std::string::npos);
  }
  try {
    em::make_device_timeline("gpu");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown device 'gpu'"), std::string::npos);
  }
}

// Exposed communication: time with some work in flight and no op running; peer wait: the part
// with a receive in flight. Times in ns, given.
TEST(CommTracker, ExposureAndMatching) {
  em::CommTracker t;
  em::OpCall allreduce;
  allreduce.add_tensor({10});  // identity: the test OpCall's position (1)
  const uint64_t kAllreduce = 7, kRecv = 9, kFallback = 99;
  t.expect(kAllreduce, allreduce, /*tensorless=*/false);
  const void* tensor = allreduce.tensors()[0].id;
  t.compute(+1, 0);                               // an op runs from 0 to 50
  t.work_start(1, tensor, kFallback, false, 20);  // the all-reduce's work: 20..120
  t.compute(-1, 50);
  t.compute(+1, 80);  // another op 80..90
  t.compute(-1, 90);
  t.work_end(1, 120);  // exposed: 50..80 and 90..120 = 60
  em::OpCall recv;
  recv.add_tensor({10});
  t.expect(kRecv, recv, false);
  t.work_start(2, nullptr, kFallback, /*recv=*/true, 200);  // names no tensor: unmatched
  std::map<uint64_t, int64_t> times;
  for (const auto& [key, ns] : t.times(210)) times[key] = ns;
  EXPECT_EQ(times[kFallback], 10);  // in flight: its time so far
  t.work_end(2, 230);               // all 30 exposed, peer wait
  em::CommTracker::Totals totals = t.totals(300);
  EXPECT_EQ(totals.exposed_ns, 60 + 30);
  EXPECT_EQ(totals.peer_wait_ns, 30);
  times.clear();
  for (const auto& [key, ns] : t.times(300)) times[key] = ns;
  EXPECT_EQ(times[kAllreduce], 100);  // matched by its tensor
  EXPECT_EQ(times[kFallback], 30);    // a work no collective claims keeps its own row
  EXPECT_EQ(times.count(kRecv), 0u);
}
