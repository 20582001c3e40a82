// The size of a c10d ProcessGroup passed to a collective as an IValue. The c10d headers are
// included in process_group.cpp only, and only where this torch ships them (a torch built
// without distributed has no collectives to count: the size is then unknown).
#pragma once

#include <ATen/core/ivalue.h>

#include <memory>
#include <string>

#include "comm.h"

namespace effmetrics {

// The group's size, or 0 when the value is not a ProcessGroup (or its size cannot be read).
int process_group_size(const c10::IValue& v);

// Asks the ProcessGroup among a collective's arguments to time its works on the device (NCCL:
// start and end events per work; stays on for the group). False where there is none or it
// cannot.
bool enable_collective_timing(c10::ArrayRef<const c10::IValue> inputs);

// The work a collective op returned (c10d ops return one among their outputs), or null and why.
std::unique_ptr<DeviceWork> device_work(const std::vector<c10::IValue>& outputs, std::string& why);

}  // namespace effmetrics
