// The event timeline (timing_cuda.cpp) through c10's device-generic event interface, on a fake
// device registered as PrivateUse1: its events are stamped when recorded plus a lag, and are
// "done" only once the steady clock passes the stamp, like a GPU running behind the host. This
// runs the same c10::Event calls as CUDA (record, query, synchronize, elapsedTime) on CPU, and
// the raw-event timeline CUDA uses (make_event_timeline) with a fake runtime's calls.
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "effmetrics/profiler.h"
#include "effmetrics/timing.h"

namespace em = effmetrics;

namespace {

std::atomic<int64_t> g_lag_ns{0};      // how far behind the host the fake device runs
std::atomic<int> g_events_created{0};  // distinct events (the pool reuses released ones)

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class LaggingDevice final : public c10::impl::DeviceGuardImplInterface {
 public:
  static constexpr c10::DeviceType kType = c10::DeviceType::PrivateUse1;
  c10::DeviceType type() const override { return kType; }
  c10::Device exchangeDevice(c10::Device) const override { return {kType, 0}; }
  c10::Device getDevice() const override { return {kType, 0}; }
  void setDevice(c10::Device) const override {}
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  // noexcept: torch 2.4 declares these noexcept (later releases do not; stricter is fine)
  c10::Stream getStream(c10::Device d) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, d);
  }
  c10::Stream exchangeStream(c10::Stream s) const noexcept override { return s; }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  void record(void** event, const c10::Stream&, const c10::DeviceIndex,
              const c10::EventFlag) const override {
    if (*event == nullptr) {
      *event = new int64_t;
      ++g_events_created;
    }
    *static_cast<int64_t*>(*event) = now_ns() + g_lag_ns.load();
  }
  bool queryEvent(void* event) const override {
    return event == nullptr || now_ns() >= *static_cast<int64_t*>(event);
  }
  void synchronizeEvent(void* event) const override {
    while (!queryEvent(event)) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<int64_t*>(event);
  }
  double elapsedTime(void* from, void* to, const c10::DeviceIndex) const override {
    return static_cast<double>(*static_cast<int64_t*>(to) - *static_cast<int64_t*>(from)) / 1e6;
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, LaggingDevice);

}  // namespace

TEST(EventTimeline, MarksCompleteWhenTheDeviceReachesThem) {
  g_lag_ns = 30'000'000;  // 30 ms behind
  auto tl = em::make_device_timeline("privateuseone");
  EXPECT_EQ(tl->clock(), "privateuseone_event");
  uint32_t a = tl->mark();
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  uint32_t b = tl->mark();
  EXPECT_FALSE(tl->done(b));  // the device has not got there yet: asking never blocks
  tl->wait(b);
  EXPECT_TRUE(tl->done(a));
  EXPECT_TRUE(tl->done(b));
  EXPECT_GE(tl->elapsed_ns(a, b), 5'000'000);
  EXPECT_LT(tl->elapsed_ns(a, b), 500'000'000);
  const int created = g_events_created;
  tl->release(a);
  EXPECT_EQ(tl->mark(), a);  // the released event is recorded again, none created
  EXPECT_EQ(g_events_created, created);
  g_lag_ns = 0;
}

TEST(EventTimeline, SnapshotsNeverWaitStopDoes) {
  g_lag_ns = 50'000'000;
  em::ProfilerOptions o;
  o.time = true;
  o.device = "privateuseone";
  em::Profiler prof(o);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto t0 = std::chrono::steady_clock::now();
  em::Report s = prof.snapshot();  // closes step 0; the device is 50 ms behind
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(40));
  EXPECT_EQ(s.wall_ns, 0);  // nothing resolved yet
  EXPECT_TRUE(prof.device_steps(/*wait=*/false).empty());
  std::vector<em::DeviceStep> steps = prof.device_steps(/*wait=*/true);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_GE(steps[0].wall_ns, 10'000'000);
  EXPECT_EQ(steps[0].busy_ns, 0);  // CPU ops only: nothing ran on the device
  EXPECT_EQ(steps[0].idle_ns, steps[0].wall_ns);
  em::Report r = prof.stop();  // waits for the last step
  EXPECT_EQ(r.device_steps.size(), 2u);
  EXPECT_EQ(r.clock, "privateuseone_event");
  g_lag_ns = 0;
}

TEST(EventTimeline, AbsentDeviceIndexIsAClearError) {
  EXPECT_THROW(em::make_device_timeline("privateuseone:3"), std::invalid_argument);
}

TEST(EventTimeline, BenchmarkQueuesRunsAndReadsThemInChunks) {
  g_lag_ns = 20'000'000;  // the device drains each chunk 20 ms after the host queued it
  auto timer = em::make_device_timer("privateuseone", /*l2_flush=*/false);
  ASSERT_TRUE(timer->deferred());
  int runs = 0;
  em::BenchmarkOptions o;
  o.warmup = 2;
  o.warmup_time = 0;
  o.min_run_time = 0.05;
  o.max_run_time = 1.0;
  o.min_runs = 5;
  em::BenchmarkResult r = em::benchmark(
      [&] {
        ++runs;
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
        while (std::chrono::steady_clock::now() < until) {
        }
      },
      o, timer.get());
  // The fake device stamps events when the host records them: each run's time is the host's
  // 2 ms. Every queued run is read back (warm-up runs one by one).
  EXPECT_EQ(r.clock, "privateuseone_event");
  EXPECT_EQ(static_cast<int>(r.samples.size()) + o.warmup, runs);
  EXPECT_GE(r.samples.size(), 5u);
  for (double s : r.samples) EXPECT_GE(s, 0.002);
  EXPECT_LT(r.stats.median, 0.02);
  g_lag_ns = 0;
}

// ---- Raw events (make_event_timeline): the CUDA path's pooled events, here recorded with a
// fake runtime's calls on the same lagging device (stamped when recorded plus the lag).
namespace {

std::atomic<int> g_raw_created{0}, g_raw_destroyed{0}, g_raw_cleared{0}, g_raw_on_stream{0};
std::atomic<int> g_raw_fail_record{0};  // the error code the next record returns (0: none)
void* const kRawStream = reinterpret_cast<void*>(uintptr_t{0x5157});  // device 0's current stream

int64_t& stamp(void* e) { return *static_cast<int64_t*>(e); }
int raw_create(void** e) {
  *e = new int64_t(0);
  ++g_raw_created;
  return 0;
}
int raw_destroy(void* e) {
  delete static_cast<int64_t*>(e);
  ++g_raw_destroyed;
  return 0;
}
int raw_record(void* e, void* stream) {
  if (int error = g_raw_fail_record.exchange(0)) return error;
  if (stream == kRawStream) ++g_raw_on_stream;
  stamp(e) = now_ns() + g_lag_ns.load();
  return 0;
}
int raw_query(void* e) { return now_ns() >= stamp(e) ? 0 : 600; }
int raw_synchronize(void* e) {
  while (raw_query(e) != 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
  return 0;
}
int raw_elapsed(float* ms, void* from, void* to) {
  *ms = static_cast<float>(static_cast<double>(stamp(to) - stamp(from)) / 1e6);
  return 0;
}
int raw_clear() {
  ++g_raw_cleared;
  return 0;
}
const char* raw_error_string(int) { return "fake device fault"; }
void* raw_stream(int8_t index) { return index == 0 ? kRawStream : nullptr; }

em::EventCalls fake_calls() {
  em::EventCalls c;
  c.create = raw_create;
  c.destroy = raw_destroy;
  c.record = raw_record;
  c.query = raw_query;
  c.synchronize = raw_synchronize;
  c.elapsed_ms = raw_elapsed;
  c.clear_error = raw_clear;
  c.error_string = raw_error_string;
  c.current_stream = raw_stream;
  c.name = "fake";
  return c;
}

}  // namespace

TEST(RawEventTimeline, MarksArePooledAndCompleteWhenTheDeviceReachesThem) {
  g_lag_ns = 30'000'000;
  const int created0 = g_raw_created, destroyed0 = g_raw_destroyed, on_stream0 = g_raw_on_stream;
  {
    auto tl = em::make_event_timeline("privateuseone", fake_calls());
    EXPECT_EQ(tl->clock(), "privateuseone_event");
    uint32_t a = tl->mark();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    uint32_t b = tl->mark();
    EXPECT_EQ(g_raw_on_stream - on_stream0, 2);  // recorded on the device's current stream
    const int cleared = g_raw_cleared;
    EXPECT_FALSE(tl->done(b));              // not there yet: asking never blocks ...
    EXPECT_EQ(g_raw_cleared, cleared + 1);  // ... and "not ready" is not left as the last error
    tl->wait(b);
    EXPECT_TRUE(tl->done(a));
    EXPECT_TRUE(tl->done(b));
    EXPECT_GE(tl->elapsed_ns(a, b), 5'000'000);
    EXPECT_LT(tl->elapsed_ns(a, b), 500'000'000);
    EXPECT_EQ(g_raw_created - created0, 2);
    tl->release(a);
    EXPECT_EQ(tl->mark(), a);  // the released event is recorded again, none created
    EXPECT_EQ(g_raw_created - created0, 2);
    EXPECT_NE(tl->mark(), a);  // a is taken again: the pool grows
    EXPECT_EQ(g_raw_created - created0, 3);
  }
  EXPECT_EQ(g_raw_destroyed - destroyed0, 3);  // every event goes with the timeline
  g_lag_ns = 0;
}

TEST(RawEventTimeline, AFailedCallThrowsTheRuntimesMessageAndClearsIt) {
  auto tl = em::make_event_timeline("privateuseone", fake_calls());
  const int cleared = g_raw_cleared;
  g_raw_fail_record = 700;
  try {
    tl->mark();
    FAIL() << "a failed record must throw";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("fake event record failed on privateuseone:0"), std::string::npos) << what;
    EXPECT_NE(what.find("fake device fault (code 700)"), std::string::npos) << what;
  }
  EXPECT_EQ(g_raw_cleared, cleared + 1);    // torch's next launch check will not see it
  uint32_t a = tl->mark(), b = tl->mark();  // the pool is intact
  tl->wait(b);
  EXPECT_GE(tl->elapsed_ns(a, b), 0);
}

TEST(RawEventTimeline, ProfilerStepsResolveOnRawEvents) {
  g_lag_ns = 50'000'000;
  em::ProfilerOptions o;
  o.time = true;
  o.timeline = em::make_event_timeline("privateuseone", fake_calls());
  em::Profiler prof(o);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto t0 = std::chrono::steady_clock::now();
  em::Report s = prof.snapshot();  // closes step 0 without waiting for the device
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(40));
  EXPECT_EQ(s.wall_ns, 0);
  std::vector<em::DeviceStep> steps = prof.device_steps(/*wait=*/true);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_GE(steps[0].wall_ns, 10'000'000);
  EXPECT_EQ(steps[0].idle_ns, steps[0].wall_ns);  // CPU ops only: nothing ran on the device
  em::Report r = prof.stop();
  EXPECT_EQ(r.device_steps.size(), 2u);
  EXPECT_EQ(r.clock, "privateuseone_event");
  g_lag_ns = 0;
}

TEST(RawEventTimeline, IncompleteCallsAndAbsentDevicesAreRefused) {
  em::EventCalls c = fake_calls();
  c.clear_error = nullptr;
  EXPECT_THROW(em::make_event_timeline("privateuseone", c), std::invalid_argument);
  EXPECT_THROW(em::make_event_timeline("privateuseone:3", fake_calls()), std::invalid_argument);
  // Only CUDA records with cudart's calls; other devices keep c10::Event.
  EXPECT_EQ(em::device_event_calls("privateuseone"), "c10");
}
