// Device timing: events on the current stream through c10's device-generic interfaces, so this
// compiles (and fails with a clear message at run time) on CPU-only builds of torch. The one
// place with device-specific code.
#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <stdexcept>

#include "effmetrics/timing.h"

namespace effmetrics {
namespace {

class DeviceEventTimer final : public RunTimer {
 public:
  DeviceEventTimer(c10::Device device, bool l2_flush)
      : device_(device),
        impl_(c10::impl::getDeviceGuardImpl(device.type())),
        start_(device.type(), c10::EventFlag::BACKEND_DEFAULT),
        end_(device.type(), c10::EventFlag::BACKEND_DEFAULT) {
    if (l2_flush) {
      // 256 MiB: several times the L2 of any current GPU (H100/H200: 50 MiB).
      flush_ = at::empty({256 << 20}, at::TensorOptions().dtype(at::kByte).device(device));
    }
  }
  void before_run() override {
    if (flush_.defined()) flush_.zero_();
  }
  void start() override { start_.record(impl_->getStream(device_)); }
  double stop() override {
    end_.record(impl_->getStream(device_));
    end_.synchronize();
    return start_.elapsedTime(end_) / 1e3;  // milliseconds -> seconds
  }
  std::string clock() const override { return "cuda_event"; }

 private:
  c10::Device device_;
  const c10::impl::DeviceGuardImplInterface* impl_;
  c10::Event start_, end_;
  at::Tensor flush_;
};

}  // namespace

std::unique_ptr<RunTimer> make_device_timer(const std::string& device, bool l2_flush) {
  c10::Device dev(device);
  if (!c10::impl::hasDeviceGuardImpl(dev.type()) ||
      c10::impl::getDeviceGuardImpl(dev.type())->deviceCount() == 0) {
    throw std::invalid_argument("effmetrics::benchmark: device '" + device +
                                "' is not available on this machine; use device='cpu'");
  }
  if (!dev.has_index()) dev = c10::Device(dev.type(), 0);
  return std::make_unique<DeviceEventTimer>(dev, l2_flush);
}

}  // namespace effmetrics
