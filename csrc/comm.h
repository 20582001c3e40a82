// Communication in flight, for a timed Profiler: each collective op (c10d) is matched to its
// backend's work record ("gloo:all_reduce"), whose span is the collective's time, and an exposure
// clock accumulates the time during which some communication is in flight and no other op runs
// on any observed thread (exposed communication; with a p2p receive in flight: waiting for a
// peer). A gloo collective is in flight from its start to its end on the backend's thread; a p2p
// send or recv from posting it to the end of its wait (a send waited late looks long).
// Collectives are rare next to ops, so one lock guards it all; the per-op cost is one relaxed
// atomic load while no communication is in flight.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "effmetrics/op_call.h"

namespace effmetrics {

// A collective's asynchronous work on a device (an NCCL work, made by process_group.cpp): its
// kernels run on the backend's own stream, so the host sees only their launch.
class DeviceWork {
 public:
  virtual ~DeviceWork() = default;
  virtual bool done() = 0;  // its kernels have finished (or it failed)
  // Device time from its start to its end event; -1: unknown, why says why.
  virtual int64_t elapsed_ns(std::string& why) = 0;
};

class CommTracker {
 public:
  // A collective op started: its cell (CellKey::pack) and the tensors its backend's work will
  // name; tensorless: the work names none (a barrier).
  // device: its work runs on a device stream; the backend's host record (its launch) is then
  // ignored, and device_work() gives its time.
  void expect(uint64_t cell_key, const OpCall& call, bool tensorless, bool device = false);
  // The device work a collective op returned: its device time goes to cell_key once it is done
  // (null: none, why says why; null and no why: the op's own device span times it).
  void device_work(uint64_t cell_key, std::unique_ptr<DeviceWork> work, const std::string& why);
  // Adds the device times of the works done by now; wait: waits for all of them first (bounded:
  // a work that never finishes is dropped after 60 s, counted in Totals::device_unknown).
  void resolve_device(bool wait);
  // A backend work record started (tensor: its first tensor, or null). It takes the cell of the
  // oldest expected collective that names that tensor (a tensorless work: the oldest expected
  // barrier; a collective work naming none of them: the oldest expected), else fallback_key (the
  // work's own name, at the root).
  void work_start(uint64_t record, const void* tensor, uint64_t fallback_key, bool recv,
                  int64_t now_ns);
  void work_end(uint64_t record, int64_t now_ns);
  // A top-level op other than a collective starts (+1) or ends (-1) on some observed thread;
  // now_ns < 0: the steady clock, read only while some work is in flight.
  void compute(int delta, int64_t now_ns = -1);

  struct Totals {
    // -1 (unknown) once a device work was seen: its overlap with compute happens on the device,
    // which the host clock cannot see.
    int64_t exposed_ns = 0;
    int64_t peer_wait_ns = 0;
    int64_t device_unknown = 0;      // device works whose time could not be read
    std::string device_unknown_why;  // the first one's reason
  };
  // Keep every ended work's span (a traced profile).
  void keep_spans() { keep_spans_ = true; }
  struct Span {
    uint64_t key;
    int64_t start_ns, dur_ns;
  };
  std::vector<Span> spans();
  Totals totals(int64_t now_ns);
  // The communication time so far per cell key, works still in flight up to now_ns included
  // (a collective's waiter may wake before its backend ends the work record: a step boundary
  // then finds it in flight).
  std::vector<std::pair<uint64_t, int64_t>> times(int64_t now_ns);

 private:
  struct Expected {
    uint64_t key;
    std::vector<const void*> tensors;
    bool tensorless;
    bool device;
  };
  struct Work {
    int64_t t0;
    uint64_t key;
    bool recv;
  };
  void advance(int64_t now_ns);          // mu_ held: accumulate the exposure since the last event
  void untimed(const std::string& why);  // mu_ held: a device work without a time, counted

  std::atomic<int> computing_{0};  // threads inside a top-level non-collective op
  std::atomic<int> in_flight_{0};  // backend works in flight (read without the lock)
  std::mutex mu_;
  std::deque<Expected> expected_;
  std::unordered_map<uint64_t, Work> works_;  // by RecordFunction address
  std::unordered_map<uint64_t, int64_t> time_ns_;
  std::vector<std::pair<uint64_t, std::unique_ptr<DeviceWork>>> device_works_;  // not yet done
  bool device_seen_ = false;
  int open_ = 0, open_recv_ = 0;
  bool keep_spans_ = false;
  std::vector<Span> spans_;
  int64_t mark_ns_ = 0;
  Totals totals_;
};

}  // namespace effmetrics
