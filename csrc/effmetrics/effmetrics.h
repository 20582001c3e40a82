// The public C++ API of effmetrics (no Python, no pybind11).
#pragma once

#include "effmetrics/memory.h"
#include "effmetrics/op_call.h"
#include "effmetrics/params.h"
#include "effmetrics/profiler.h"
#include "effmetrics/report.h"
#include "effmetrics/rules.h"
#include "effmetrics/scope.h"
#include "effmetrics/timing.h"
