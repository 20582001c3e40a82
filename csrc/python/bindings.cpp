// pybind11 bindings: translate between Python and the C++ core, compute nothing.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "effmetrics/effmetrics.h"
#include "effmetrics/nvtx.h"

namespace py = pybind11;
using namespace effmetrics;

namespace {

py::dict counts_to_dict(const Counts& c) {
  py::dict d;
  Counts::fields(c, [&](const char* name, int64_t v) { d[name] = v; });
  d["intensity"] = c.intensity();
  return d;
}

// Columns {field: [values...]} for a table of Counts: one Python list per field is far cheaper
// than one dict per row, and pandas builds a DataFrame from it directly.
template <typename Row, typename Get>
py::dict counts_columns(const std::vector<Row>& rows, Get get) {
  std::vector<std::pair<const char*, std::vector<int64_t>>> cols;
  const Counts zero;
  Counts::fields(
      zero, [&](const char* name, int64_t) { cols.emplace_back(name, std::vector<int64_t>{}); });
  for (const Row& r : rows) {
    size_t k = 0;
    const Counts& c = get(r);
    Counts::fields(c, [&](const char*, int64_t v) { cols[k++].second.push_back(v); });
  }
  py::dict d;
  for (auto& [name, values] : cols) d[name] = py::cast(values);
  return d;
}

py::list device_steps_to_list(const std::vector<DeviceStep>& steps) {
  py::list out;
  for (const DeviceStep& s : steps) out.append(py::make_tuple(s.wall_ns, s.busy_ns, s.idle_ns));
  return out;
}

py::dict module_columns(const Report& r) {
  std::vector<std::string> names, parents;
  std::vector<int64_t> depth, calls;
  for (const ModuleRow& m : r.modules) {
    names.push_back(m.name);
    parents.push_back(m.parent);
    depth.push_back(m.depth);
    calls.push_back(m.calls);
  }
  py::dict modules;
  modules["name"] = names;
  modules["parent"] = parents;
  modules["depth"] = depth;
  modules["calls"] = calls;
  modules["self"] =
      counts_columns(r.modules, [](const ModuleRow& m) -> const Counts& { return m.self; });
  modules["total"] =
      counts_columns(r.modules, [](const ModuleRow& m) -> const Counts& { return m.total; });
  return modules;
}

py::dict op_columns(const Report& r) {
  std::vector<std::string> op_module, op_name, op_phase, op_kind;
  for (const OpRow& o : r.ops) {
    op_module.push_back(o.module);
    op_name.push_back(o.op);
    op_phase.push_back(phase_name(o.phase));
    op_kind.push_back(kind_name(o.kind));
  }
  py::dict ops = counts_columns(r.ops, [](const OpRow& o) -> const Counts& { return o.counts; });
  ops["module"] = op_module;
  ops["op"] = op_name;
  ops["phase"] = op_phase;
  ops["kind"] = op_kind;
  return ops;
}

// A report reaches Python as the C++ object, read like a dict: each part is converted when
// asked for (profile() and a training loop's per-step snapshot mostly need the totals only).
py::object report_item(const Report& r, const std::string& key) {
  if (key == "total") return counts_to_dict(r.total);
  if (key == "modules") return module_columns(r);
  if (key == "ops") return op_columns(r);
  if (key == "unsupported_ops") {
    py::dict unsupported;
    for (const auto& [op, n] : r.unsupported_ops) unsupported[py::str(op)] = n;
    return unsupported;
  }
  if (key == "params_applied") return py::int_(r.params_applied);
  if (key == "params_touched") return py::int_(r.params_touched);
  if (key == "wall_ns") return py::int_(r.wall_ns);
  if (key == "busy_ns") return py::int_(r.busy_ns);
  if (key == "clock") return py::str(r.clock);
  if (key == "op_times") return py::bool_(r.op_times);
  if (key == "device_steps") return device_steps_to_list(r.device_steps);
  if (key == "chrome_trace") {
    return r.events.empty() ? py::object(py::none()) : py::str(r.to_chrome_trace());
  }
  throw py::key_error(key);
}

Phase parse_phase(const std::string& phase) {
  if (phase == "forward") return Phase::kForward;
  if (phase == "backward") return Phase::kBackward;
  throw std::invalid_argument("phase must be 'forward' or 'backward'; got '" + phase + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "effmetrics C++ core (RecordFunction observer, op rules, scopes, reports)";

  py::class_<Report>(m, "Report").def("__getitem__", &report_item);

  py::class_<Profiler>(m, "Profiler")
      .def(py::init([](bool all_threads, bool time, bool trace, bool nvtx, bool nvtx_ops,
                       const std::string& device, bool time_ops) {
             ProfilerOptions o;
             o.all_threads = all_threads;
             o.time = time;
             o.trace = trace;
             o.nvtx = nvtx;
             o.nvtx_ops = nvtx_ops;
             o.device = device;
             o.time_ops = time_ops;
             return std::make_unique<Profiler>(o, /*start_now=*/false);
           }),
           py::arg("all_threads") = false, py::arg("time") = false, py::arg("trace") = false,
           py::arg("nvtx") = false, py::arg("nvtx_ops") = false, py::arg("device") = "",
           py::arg("time_ops") = false)
      .def("start", &Profiler::start)
      .def("stop", &Profiler::stop)
      .def("snapshot", &Profiler::snapshot)
      .def("set_phase", [](Profiler& p, const std::string& s) { p.set_phase(parse_phase(s)); })
      .def("watch",
           [](Profiler& p, const std::vector<std::pair<uintptr_t, int64_t>>& tensors) {
             for (const auto& [impl, numel] : tensors) {
               p.watch(reinterpret_cast<const void*>(impl), numel);
             }
           })
      .def(
          "device_steps",
          [](Profiler& p, bool wait, size_t first) {
            return device_steps_to_list(p.device_steps(wait, first));
          },
          py::arg("wait"), py::arg("first") = 0)
      .def_property_readonly("running", &Profiler::running);

  m.def(
      "benchmark",
      [](const std::function<void()>& fn, int warmup, double warmup_time, double min_run_time,
         double max_run_time, int min_runs, double iqr_tolerance, const std::string& device,
         bool l2_flush) {
        BenchmarkOptions o;
        o.warmup = warmup;
        o.warmup_time = warmup_time;
        o.min_run_time = min_run_time;
        o.max_run_time = max_run_time;
        o.min_runs = min_runs;
        o.iqr_tolerance = iqr_tolerance;
        o.device = device;
        o.l2_flush = l2_flush;
        BenchmarkResult r = benchmark(fn, o);
        py::dict d;
        d["samples"] = r.samples;
        d["clock"] = r.clock;
        d["total_time"] = r.total_time;
        return d;
      },
      py::arg("fn"), py::arg("warmup"), py::arg("warmup_time"), py::arg("min_run_time"),
      py::arg("max_run_time"), py::arg("min_runs"), py::arg("iqr_tolerance"), py::arg("device"),
      py::arg("l2_flush"));
  m.def("summarize", [](const std::vector<double>& samples) {
    TimingStats s = summarize(samples);
    py::dict d;
    d["n"] = s.n;
    d["median"] = s.median;
    d["mean"] = s.mean;
    d["std"] = s.std;
    d["min"] = s.min;
    d["max"] = s.max;
    d["p10"] = s.p10;
    d["p90"] = s.p90;
    d["p99"] = s.p99;
    d["iqr"] = s.iqr;
    return d;
  });

  py::class_<MemoryTracker>(m, "MemoryTracker")
      .def(py::init<>())
      .def("start", &MemoryTracker::start)
      .def("stop", &MemoryTracker::stop)
      .def("peak_bytes",
           [](const MemoryTracker& t, const std::string& d) { return t.peak_bytes(d.c_str()); })
      .def("current_bytes",
           [](const MemoryTracker& t, const std::string& d) { return t.current_bytes(d.c_str()); })
      .def("peak_total_bytes", [](const MemoryTracker& t, const std::string& d) {
        return t.peak_total_bytes(d.c_str());
      });

  m.def("nvtx_range_push", [](const std::string& message) { nvtx_range_push(message.c_str()); });
  m.def("nvtx_range_pop", &nvtx_range_pop);

  m.def("intern_scope_name", &intern_scope_name);
  // Tensors by their TensorImpl address (Python's tensor._cdata), as watch() takes them; the
  // caller keeps the tensors alive. Returns (first, numel, requires_grad) lists.
  m.def("tensor_facts", [](const std::vector<uintptr_t>& impls) {
    std::vector<const c10::TensorImpl*> tensors;
    tensors.reserve(impls.size());
    for (uintptr_t a : impls) tensors.push_back(reinterpret_cast<const c10::TensorImpl*>(a));
    TensorFacts f = tensor_facts(tensors);
    std::vector<bool> grad(f.requires_grad.begin(), f.requires_grad.end());
    return py::make_tuple(f.first, f.numel, grad);
  });
  m.def("current_scope_name", [] { return scope_name(current_scope()); });
  m.def("push_scope_id", &push_scope_id);
  m.def("pop_scope", &pop_scope);
  m.def("scope_depth", &scope_depth);
  m.def("truncate_scopes", &truncate_scopes);
  m.def("max_profilers", [] { return Profiler::kMaxProfilers; });
}
