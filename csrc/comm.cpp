#include "comm.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "effmetrics/scope.h"

namespace effmetrics {
namespace {
constexpr size_t kMaxExpected = 4096;  // collectives whose backend records no work: forgotten
}

void CommTracker::expect(uint64_t cell_key, const OpCall& call, bool tensorless, bool device) {
  Expected e{cell_key, {}, tensorless, device};
  if (!tensorless) {
    for (const TensorMeta& t : call.tensors()) {
      if (t.id != nullptr) e.tensors.push_back(t.id);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (expected_.size() == kMaxExpected) expected_.pop_front();
  expected_.push_back(std::move(e));
}

void CommTracker::work_start(uint64_t record, const void* tensor, uint64_t fallback_key, bool recv,
                             int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t key = fallback_key;
  auto it = std::find_if(expected_.begin(), expected_.end(), [&](const Expected& e) {
    if (tensor == nullptr) return e.tensorless;
    return std::find(e.tensors.begin(), e.tensors.end(), tensor) != e.tensors.end();
  });
  if (it == expected_.end() && tensor != nullptr && !expected_.empty() && !recv) {
    // A work on a buffer of the backend's own (gloo's reduce-scatter all-reduces a copy): a
    // backend runs a group's works in the order they were issued, so the oldest one.
    it = expected_.begin();
  }
  if (it != expected_.end()) {
    key = it->key;
    const bool device = it->device;
    expected_.erase(it);
    if (device) return;  // its launch only: device_work() has its time
  }
  advance(now_ns);
  works_[record] = Work{now_ns, key, recv};
  open_ += 1;
  open_recv_ += recv ? 1 : 0;
  in_flight_.store(open_, std::memory_order_release);
}

void CommTracker::work_end(uint64_t record, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = works_.find(record);
  if (it == works_.end()) return;  // started before this profiler
  advance(now_ns);
  time_ns_[it->second.key] += now_ns - it->second.t0;
  if (keep_spans_) spans_.push_back(Span{it->second.key, it->second.t0, now_ns - it->second.t0});
  open_ -= 1;
  open_recv_ -= it->second.recv ? 1 : 0;
  in_flight_.store(open_, std::memory_order_release);
  works_.erase(it);
}

void CommTracker::compute(int delta, int64_t now_ns) {
  if (in_flight_.load(std::memory_order_acquire) == 0) {
    computing_.fetch_add(delta, std::memory_order_relaxed);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  advance(now_ns < 0 ? steady_now_ns() : now_ns);
  computing_.fetch_add(delta, std::memory_order_relaxed);
}

void CommTracker::advance(int64_t now_ns) {
  if (open_ > 0 && computing_.load(std::memory_order_relaxed) <= 0 && now_ns > mark_ns_) {
    totals_.exposed_ns += now_ns - mark_ns_;
    if (open_recv_ > 0) totals_.peer_wait_ns += now_ns - mark_ns_;
  }
  mark_ns_ = now_ns;
}

void CommTracker::device_work(uint64_t cell_key, std::unique_ptr<DeviceWork> work,
                              const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  device_seen_ = true;
  if (work) {
    device_works_.emplace_back(cell_key, std::move(work));
  } else if (!why.empty()) {
    untimed(why);  // the op returned no work whose time can be read
  }
}

void CommTracker::untimed(const std::string& why) {
  totals_.device_unknown += 1;
  if (totals_.device_unknown_why.empty()) totals_.device_unknown_why = why;
}

void CommTracker::resolve_device(bool wait) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  size_t kept = 0;
  for (auto& [key, work] : device_works_) {
    bool done = work->done();
    while (wait && !done && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      done = work->done();
    }
    if (!done && !wait) {
      device_works_[kept++] = {key, std::move(work)};  // in order: still running
      continue;
    }
    std::string why = "still running after 60 s";
    const int64_t ns = done ? work->elapsed_ns(why) : -1;
    if (ns >= 0) {
      time_ns_[key] += ns;
    } else {
      untimed(why);
    }
  }
  device_works_.resize(kept);
}

std::vector<CommTracker::Span> CommTracker::spans() {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

CommTracker::Totals CommTracker::totals(int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  advance(now_ns);
  Totals t = totals_;
  if (device_seen_) t.exposed_ns = t.peer_wait_ns = -1;
  return t;
}

std::vector<std::pair<uint64_t, int64_t>> CommTracker::times(int64_t now_ns) {
  resolve_device(/*wait=*/false);
  std::lock_guard<std::mutex> lock(mu_);
  std::unordered_map<uint64_t, int64_t> t = time_ns_;
  for (const auto& [record, w] : works_) t[w.key] += std::max<int64_t>(now_ns - w.t0, 0);
  return {t.begin(), t.end()};
}

}  // namespace effmetrics
