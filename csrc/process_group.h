// The size of a c10d ProcessGroup passed to a collective as an IValue. The c10d headers are
// included in process_group.cpp only, and only where this torch ships them (a torch built
// without distributed has no collectives to count: the size is then unknown).
#pragma once

#include <ATen/core/ivalue.h>

namespace effmetrics {

// The group's size, or 0 when the value is not a ProcessGroup (or its size cannot be read).
int process_group_size(const c10::IValue& v);

}  // namespace effmetrics
