// Timing: statistics of repeated measurements, the autorange stopping rule, and the benchmark
// engine behind effmetrics.benchmark(). Times are in seconds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace effmetrics {

struct TimingStats {
  int64_t n = 0;
  double median = 0, mean = 0, std = 0, min = 0, max = 0;
  double p10 = 0, p90 = 0, p99 = 0, iqr = 0;  // iqr = p75 - p25
};

// Percentile q in [0, 100] of sorted samples, interpolating linearly between order statistics
// (numpy's default): the value at rank q/100 * (n - 1).
double percentile(const std::vector<double>& sorted, double q);
// All statistics of the samples (any order). std is the sample standard deviation (n - 1).
TimingStats summarize(std::vector<double> samples);

struct BenchmarkOptions {
  int warmup = 3;  // untimed runs first (and at least warmup_time seconds of them)
  double warmup_time = 0.05;
  double min_run_time = 0.2;  // measure at least this long ...
  double max_run_time = 2.0;  // ... and stop here (measured or wall time) whatever the spread
  int min_runs = 5;
  double iqr_tolerance = 0.05;  // stable when iqr / median <= this
  std::string device = "cpu";   // "cpu": steady clock; "cuda[:i]": events on the current stream
  bool l2_flush = false;        // CUDA: overwrite a buffer larger than L2 before each run
};

// The autorange stopping rule on `elapsed` = the summed measured time: after min_runs and
// min_run_time, stop as soon as the interquartile range is within iqr_tolerance of the median;
// stop at max_run_time regardless.
bool autorange_done(const std::vector<double>& samples, double elapsed,
                    const BenchmarkOptions& options);

// Times one run of a workload. CPU: a monotonic clock around the call. CUDA: events recorded on
// the current stream around the call, read after a synchronize (timing_cuda.cpp).
class RunTimer {
 public:
  virtual ~RunTimer() = default;
  virtual void before_run() {}  // untimed preparation (L2 flush)
  virtual void start() = 0;
  virtual double stop() = 0;  // seconds since start()
  virtual std::string clock() const = 0;
  // A deferred timer's device runs behind the host: stop() only enqueues the end of the run
  // (and returns -1); drain() waits for the device and returns the pending runs' times in
  // order. benchmark() then enqueues runs in chunks, so the device never idles between runs
  // waiting for the host to launch the next one, an idle time that would be timed with the run
  // (triton's do_bench works the same way).
  virtual bool deferred() const { return false; }
  virtual std::vector<double> drain() { return {}; }
};
std::unique_ptr<RunTimer> make_cpu_timer();
std::unique_ptr<RunTimer> make_device_timer(const std::string& device, bool l2_flush);
std::unique_ptr<RunTimer> make_timer(const BenchmarkOptions& options);

struct BenchmarkResult {
  std::vector<double> samples;  // seconds per run, in run order
  TimingStats stats;
  std::string clock;      // "steady_clock" or "cuda_event"
  double total_time = 0;  // wall time of the measured phase
};

// Warm up, then run fn until autorange_done. A clock other than the default may be passed in
// (tests use a fake one).
BenchmarkResult benchmark(const std::function<void()>& fn, const BenchmarkOptions& options = {},
                          RunTimer* timer = nullptr);

// ---------------------------------------------------------------- busy and idle time

struct Interval {
  int64_t start_ns = 0, end_ns = 0;
};
struct BusySplit {
  int64_t wall_ns = 0;  // end - begin
  int64_t busy_ns = 0;  // covered by at least one interval (overlaps count once)
  int64_t idle_ns = 0;  // the rest: the device waiting for work (the pipeline bubble)
};
// Splits [begin, end] into busy and idle time given the spans of work in it (any order, may
// overlap or reach outside, which is clipped).
BusySplit split_busy(std::vector<Interval> spans, int64_t begin, int64_t end);

// ---------------------------------------------------------------- device timelines

// Marks on a device's timeline: a mark is an event recorded on the current stream, stamped
// when the device reaches it. Two marks around an op bound the device time of its kernels (or,
// when the device was waiting, the time until the host had enqueued them). CUDA:
// make_device_timeline("cuda[:i]") (timing_cuda.cpp); make_host_timeline() stamps marks with
// the steady clock when they are made, so the same code paths run (and are tested) on CPU.
class DeviceTimeline {
 public:
  virtual ~DeviceTimeline() = default;
  // The device whose ops are timed, as a c10::DeviceType value (CUDA = 1, CPU = 0).
  virtual int8_t device_type() const = 0;
  virtual int8_t device_index() const { return -1; }  // -1: every device of that type
  virtual std::string clock() const = 0;              // "cuda_event", "steady_clock"
  // Records a mark; thread-safe. Its id stays valid until release().
  virtual uint32_t mark() = 0;
  virtual bool done(uint32_t m) = 0;  // the device has passed the mark (never blocks)
  virtual void wait(uint32_t m) = 0;  // block until it has
  // Device time from mark `from` to mark `to` (both done); negative when `to` came first.
  virtual int64_t elapsed_ns(uint32_t from, uint32_t to) = 0;
  virtual void release(uint32_t m) = 0;  // the mark's event may be recorded again
};
// device: "cuda", "cuda:1" (any device type with events through c10). Throws
// std::invalid_argument, with the fix, when the device is not available. On CUDA the marks are
// pooled raw events made with the CUDA runtime's own calls (cudart_event_calls()), else c10::Event.
std::unique_ptr<DeviceTimeline> make_device_timeline(const std::string& device);
std::unique_ptr<DeviceTimeline> make_host_timeline(int8_t device_type = 0);

// A device runtime's event calls as plain functions: the CUDA runtime's (cudaEventCreate,
// cudaEventRecord, ...), or a fake one in tests. Each returns 0 on success, else an error code.
struct EventCalls {
  int (*create)(void** event) = nullptr;  // an event with timing, on the current device
  int (*destroy)(void* event) = nullptr;
  int (*record)(void* event, void* stream) = nullptr;
  int (*query)(void* event) = nullptr;  // 0: the device has passed it; not_ready: not yet
  int (*synchronize)(void* event) = nullptr;
  int (*elapsed_ms)(float* ms, void* from, void* to) = nullptr;
  // Resets the runtime's last error after a failed or not-ready call (cudaGetLastError), so that
  // torch's next launch check does not report it as its own.
  int (*clear_error)() = nullptr;
  const char* (*error_string)(int error) = nullptr;
  void* (*current_stream)(int8_t device_index) = nullptr;  // the calling thread's, as a handle
  int not_ready = 600;                                     // cudaErrorNotReady
  const char* name = "cudart";
};
// Marks recorded with `calls` on the current stream of `device` (its events pooled, created on
// that device): a mark is a pool pop and a record call, without c10::Event's per-record device
// switches and checks. Throws std::invalid_argument when the device is not available.
std::unique_ptr<DeviceTimeline> make_event_timeline(const std::string& device,
                                                    const EventCalls& calls);
// The CUDA runtime's event calls as torch's libc10_cuda resolves them (a CUDA build of torch
// links libcudart dynamically); null when it is not loaded or a call is missing (then c10::Event).
const EventCalls* cudart_event_calls();
// What make_device_timeline(device) records marks with: "cudart" (raw events) or "c10"
// (c10::Event: another device type, no libcudart loaded, or EFFMETRICS_EVENTS=c10 set).
std::string device_event_calls(const std::string& device);

}  // namespace effmetrics
