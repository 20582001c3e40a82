#include "device_steps.h"

#include <algorithm>

namespace effmetrics {

void DeviceSteps::open_step() {
  step_begin_ = tl_->mark();
  if (closed_.empty() && steps_.empty()) origin_ = step_begin_;
}

void DeviceSteps::close_step() {
  closed_.push_back({step_begin_, tl_->mark()});
  step_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<DeviceStep> DeviceSteps::steps(size_t first) const {
  if (first >= steps_.size()) return {};
  return {steps_.begin() + static_cast<std::ptrdiff_t>(first), steps_.end()};
}

void DeviceSteps::resolve(bool wait, const std::vector<ThreadSpans>& threads) {
  while (steps_.size() < closed_.size()) {
    const uint32_t step = static_cast<uint32_t>(steps_.size());
    const auto [begin, end] = closed_[step];
    if (!tl_->done(end)) {
      if (!wait) return;
      tl_->wait(end);
    }
    // Times relative to the step's begin mark: short intervals keep the events' resolution.
    std::vector<Interval> busy;
    for (const ThreadSpans& thread : threads) {
      auto& spans = *thread.spans;
      size_t i = 0;
      // <=: an op on another thread that ended after its step was read joins this step.
      for (; i < spans.size() && spans[i].step <= step; ++i) {
        const DeviceSpan& sp = spans[i];
        tl_->wait(sp.mark1);  // passed with `end` on one stream; not if the op used another
        const int64_t t0 = tl_->elapsed_ns(begin, sp.mark0);
        const int64_t t1 = tl_->elapsed_ns(begin, sp.mark1);
        const int64_t dur = std::max<int64_t>(t1 - t0, 0);
        if (sp.outer) {
          busy.push_back(Interval{t0, t1});
          if (scope_time_.size() <= sp.scope) scope_time_.resize(sp.scope + 1, 0);
          scope_time_[sp.scope] += dur;
        }
        if (sp.has_cell) thread.cells->at(sp.cell_key).counts.time_ns += dur;
        if (sp.comm) thread.cells->at(sp.cell_key).counts.comm_time_ns += dur;
        if (trace_) {
          events_.push_back(RawEvent{sp.op, sp.scope, sp.phase,
                                     start_ns_ + tl_->elapsed_ns(origin_, sp.mark0), dur, 0, 0});
        }
        tl_->release(sp.mark0);
        tl_->release(sp.mark1);
      }
      spans.erase(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(i));
    }
    BusySplit split = split_busy(std::move(busy), 0, tl_->elapsed_ns(begin, end));
    steps_.push_back(DeviceStep{split.wall_ns, split.busy_ns, split.idle_ns});
    wall_ns_ += split.wall_ns;
    busy_ns_ += split.busy_ns;
    if (begin != origin_ || !trace_) tl_->release(begin);
    tl_->release(end);
  }
}

}  // namespace effmetrics
