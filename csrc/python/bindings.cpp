// pybind11 bindings: translate between Python and the C++ core, compute nothing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "effmetrics/effmetrics.h"

namespace py = pybind11;
using namespace effmetrics;

namespace {

py::dict counts_to_dict(const Counts& c) {
  py::dict d;
  d["calls"] = c.calls;
  d["flops"] = c.flops;
  d["macs"] = c.macs;
  d["flops_matmul"] = c.flops_matmul;
  d["macs_matmul"] = c.macs_matmul;
  d["flops_vector"] = c.flops_vector;
  d["flops_forward"] = c.flops_forward;
  d["flops_backward"] = c.flops_backward;
  d["bytes_read"] = c.bytes_read;
  d["bytes_written"] = c.bytes_written;
  d["intensity"] = c.intensity();
  return d;
}

py::dict report_to_dict(const Report& r) {
  py::dict d;
  d["total"] = counts_to_dict(r.total);
  py::list modules;
  for (const ModuleRow& m : r.modules) {
    py::dict row;
    row["name"] = m.name;
    row["parent"] = m.parent;
    row["depth"] = m.depth;
    row["calls"] = m.calls;
    row["self"] = counts_to_dict(m.self);
    row["total"] = counts_to_dict(m.total);
    modules.append(row);
  }
  d["modules"] = modules;
  py::list ops;
  for (const OpRow& o : r.ops) {
    py::dict row;
    row["module"] = o.module;
    row["op"] = o.op;
    row["phase"] = phase_name(o.phase);
    row["kind"] = kind_name(o.kind);
    row["counts"] = counts_to_dict(o.counts);
    ops.append(row);
  }
  d["ops"] = ops;
  py::dict unsupported;
  for (const auto& [op, n] : r.unsupported_ops) unsupported[py::str(op)] = n;
  d["unsupported_ops"] = unsupported;
  d["params_applied"] = r.params_applied;
  d["params_touched"] = r.params_touched;
  return d;
}

Phase parse_phase(const std::string& phase) {
  if (phase == "forward") return Phase::kForward;
  if (phase == "backward") return Phase::kBackward;
  throw std::invalid_argument("phase must be 'forward' or 'backward'; got '" + phase + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "effmetrics C++ core (RecordFunction observer, op rules, scopes, reports)";

  py::class_<Profiler>(m, "Profiler")
      .def(py::init([](bool all_threads) {
             ProfilerOptions o;
             o.all_threads = all_threads;
             return std::make_unique<Profiler>(o, /*start_now=*/false);
           }),
           py::arg("all_threads") = false)
      .def("start", &Profiler::start)
      .def("stop", [](Profiler& p) { return report_to_dict(p.stop()); })
      .def("stop_json", [](Profiler& p) { return p.stop().to_json(); })
      .def("snapshot", [](Profiler& p) { return report_to_dict(p.snapshot()); })
      .def("set_phase", [](Profiler& p, const std::string& s) { p.set_phase(parse_phase(s)); })
      .def("watch",
           [](Profiler& p, uintptr_t impl, int64_t numel) {
             p.watch(reinterpret_cast<const void*>(impl), numel);
           })
      .def_property_readonly("running", &Profiler::running);

  m.def("intern_scope_name", &intern_scope_name);
  m.def("push_scope_id", &push_scope_id);
  m.def("push_scope", [](const std::string& name) { push_scope(name); });
  m.def("pop_scope", &pop_scope);
  m.def("scope_depth", &scope_depth);
  m.def("truncate_scopes", &truncate_scopes);
  m.def("max_profilers", [] { return Profiler::kMaxProfilers; });
  m.def("rules", [] {
    py::list out;
    for (const OpRule& r : all_rules()) {
      out.append(py::make_tuple(r.name, kind_name(r.kind)));
    }
    return out;
  });
  m.def("rule_kind", [](const std::string& op) -> py::object {
    const OpRule* r = find_rule(op);
    if (!r) return py::none();
    return py::str(kind_name(r->kind));
  });
}
