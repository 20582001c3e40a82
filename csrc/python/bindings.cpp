// pybind11 bindings: translate between Python and the C++ core, compute nothing. Keyword
// arguments with the C++ defaults, typed properties (python/effmetrics/_C.pyi lists them).
#include <ATen/record_function.h>
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>

#include "effmetrics/effmetrics.h"
#include "effmetrics/nvtx.h"

namespace py = pybind11;
using namespace effmetrics;

// module_tree.cpp: scan's and the scopes' tree work, and a module's dict of submodules,
// parameters or buffers, checked.
void bind_module_tree(py::module_& m);
py::object module_dict(PyObject* module, PyObject* name);

namespace {

py::tuple count_fields() {
  py::list names;
  const Counts zero;
  Counts::fields(zero, [&](const char* name, int64_t) { names.append(name); });
  return py::tuple(names);
}

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
  Counts::fields(zero, [&](const char* name, int64_t) { cols.emplace_back(name, 0); });
  for (auto& col : cols) col.second.reserve(rows.size());
  for (const Row& r : rows) {
    size_t k = 0;
    Counts::fields(get(r), [&](const char*, int64_t v) { cols[k++].second.push_back(v); });
  }
  py::dict d;
  for (auto& [name, values] : cols) d[name] = py::cast(values);
  return d;
}

// Each tensor of a module tree named by pairs[k] = (module index, name) in dict `where`
// ("_parameters" or "_buffers") of modules[index], handed to fn(k, tensor, TensorImpl address
// object) (both borrowed). The CPython API throughout: pybind11's casts per pair took 12% more
// time. `who` names the caller in errors.
template <typename Fn>
void for_each_named_tensor(const py::list& modules, const py::list& pairs, PyObject* where,
                           const char* who, Fn fn) {
  static PyObject* const kCdata = PyUnicode_InternFromString("_cdata");
  const Py_ssize_t n = PyList_GET_SIZE(pairs.ptr());
  const Py_ssize_t n_modules = PyList_GET_SIZE(modules.ptr());
  py::object dict;  // the last module's dict: a module's tensors are neighbours in pairs
  Py_ssize_t dict_of = -1;
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* pair = PyList_GET_ITEM(pairs.ptr(), k);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
      throw py::type_error(std::string(who) + ": each pair is (module index, name)");
    }
    const Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
    if (i == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (i != dict_of) {
      if (i < 0 || i >= n_modules) throw py::index_error(std::string(who) + ": module index");
      dict = module_dict(PyList_GET_ITEM(modules.ptr(), i), where);
      dict_of = i;
    }
    PyObject* name = PyTuple_GET_ITEM(pair, 1);
    PyObject* t = PyDict_GetItemWithError(dict.ptr(), name);  // borrowed
    if (t == nullptr) {
      if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, name);
      throw py::error_already_set();
    }
    py::object address = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, kCdata));
    if (!address) throw py::error_already_set();
    fn(k, t, address);
  }
}

const c10::TensorImpl* impl_at(const py::object& address) {
  const void* impl = PyLong_AsVoidPtr(address.ptr());
  if (impl == nullptr && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<const c10::TensorImpl*>(impl);
}

// The tensors of a module tree found by name, as params.scan() reads them before every pass
// (pairs and where: for_each_named_tensor). Returns the tensors, their TensorImpl addresses
// (tensor._cdata) and tensor_facts of them; the same loop in Python cost ~1,700 instructions a
// tensor, this ~96 ns a tensor warm.
py::tuple named_tensor_facts(const py::list& modules, const py::list& pairs, const py::str& where) {
  const Py_ssize_t n = PyList_GET_SIZE(pairs.ptr());
  py::list tensors(n), cdata(n);
  std::vector<const c10::TensorImpl*> impls(n);
  for_each_named_tensor(modules, pairs, where.ptr(), "named_tensor_facts",
                        [&](Py_ssize_t k, PyObject* t, const py::object& address) {
                          impls[k] = impl_at(address);
                          PyList_SET_ITEM(cdata.ptr(), k, address.inc_ref().ptr());
                          PyList_SET_ITEM(tensors.ptr(), k, py::handle(t).inc_ref().ptr());
                        });
  TensorFacts f = tensor_facts(impls);
  std::vector<bool> grad(f.requires_grad.begin(), f.requires_grad.end());
  return py::make_tuple(tensors, cdata, py::make_tuple(f.first, f.numel, grad));
}

// The state of the parameters named by pairs (in modules' "_parameters") that changes the work
// of a call at the same inputs, as Counter's signatures compare it before every model call: four
// bytes a parameter: bit 0 requires_grad and bit 1 a gradient is there (backward then adds to it
// instead of assigning it); the dtype (model.to(torch.bfloat16) on a model fed token ids); the
// device type and index. In Python the first two alone cost ~170 ns a parameter.
py::bytes parameter_state(const py::list& modules, const py::list& pairs) {
  static PyObject* const kParameters = PyUnicode_InternFromString("_parameters");
  std::string state(4 * PyList_GET_SIZE(pairs.ptr()), '\0');
  for_each_named_tensor(modules, pairs, kParameters, "parameter_state",
                        [&](Py_ssize_t k, PyObject*, const py::object& address) {
                          const c10::TensorImpl* impl = impl_at(address);
                          const c10::Device device = impl->device();
                          char* out = &state[4 * k];
                          out[0] = static_cast<char>(impl->requires_grad() | impl->grad().defined()
                                                                                 << 1);
                          out[1] = static_cast<char>(impl->dtype().toScalarType());
                          out[2] = static_cast<char>(device.type());
                          out[3] = static_cast<char>(device.index());
                        });
  return py::bytes(state);
}

// Profiler.watch: (TensorImpl address, numel) pairs, as ModelScan.watch lists them, and
// optionally a nonzero count for each. Read with the CPython API: pybind11's conversion of the
// list cost ~500 instructions a pair, before every pass.
void watch_tensors(Profiler& p, const py::object& tensors, const py::object& nonzero) {
  auto fast = [](const py::object& o, const char* what) {
    py::object seq = py::reinterpret_steal<py::object>(PySequence_Fast(o.ptr(), what));
    if (!seq) throw py::error_already_set();
    return seq;
  };
  auto int64 = [](PyObject* o) {
    const long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<int64_t>(v);
  };
  const py::object pairs = fast(tensors, "watch: tensors must be a list of (address, numel)");
  const py::object counts = fast(nonzero, "watch: nonzero must be a list of counts");
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(pairs.ptr());
  const Py_ssize_t k = PySequence_Fast_GET_SIZE(counts.ptr());
  if (k != 0 && k != n) throw std::invalid_argument("watch: nonzero needs one count per tensor");
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(pairs.ptr(), i);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
      throw py::type_error("watch: each tensor is a (TensorImpl address, numel) tuple");
    }
    void* impl = PyLong_AsVoidPtr(PyTuple_GET_ITEM(pair, 0));
    if (impl == nullptr && PyErr_Occurred()) throw py::error_already_set();
    p.watch(impl, int64(PyTuple_GET_ITEM(pair, 1)),
            k == 0 ? -1 : int64(PySequence_Fast_GET_ITEM(counts.ptr(), i)));
  }
}

// push_scope_id and pop_scope run around every module call: plain CPython functions, not
// pybind11's dispatcher, which cost ~850 instructions a call (callgrind) where these cost ~100.
PyObject* py_push_scope_id(PyObject*, PyObject* arg) {
  const unsigned long name_id = PyLong_AsUnsignedLong(arg);
  if (name_id == static_cast<unsigned long>(-1) && PyErr_Occurred()) return nullptr;
  if (name_id > UINT32_MAX) {
    PyErr_Format(PyExc_OverflowError, "push_scope_id: %lu is not a scope name id", name_id);
    return nullptr;
  }
  try {
    push_scope_id(static_cast<uint32_t>(name_id));
  } catch (const std::out_of_range&) {
    PyErr_Format(PyExc_IndexError, "push_scope_id: no scope name has id %lu (intern it first)",
                 name_id);
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* py_pop_scope(PyObject*, PyObject*) { return PyBool_FromLong(pop_scope()); }

PyMethodDef kScopeCalls[] = {
    {"push_scope_id", py_push_scope_id, METH_O,
     "push_scope_id(name_id): push the interned scope name on this thread's scope stack"},
    {"pop_scope", py_pop_scope, METH_NOARGS,
     "pop_scope() -> bool: pop this thread's innermost scope (False: the stack was empty)"},
    {nullptr, nullptr, 0, nullptr}};

py::list device_steps_to_list(const std::vector<DeviceStep>& steps) {
  py::list out;
  for (const DeviceStep& s : steps) out.append(py::make_tuple(s.wall_ns, s.busy_ns, s.idle_ns));
  return out;
}

py::dict module_columns(const Report& r) {
  std::vector<std::string_view> names, parents;
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
  std::vector<std::string_view> op_module, op_name, op_phase, op_kind;
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

OpKind parse_kind(const std::string& kind) {
  if (kind == "matmul") return OpKind::kMatmul;
  if (kind == "vector") return OpKind::kVector;
  if (kind == "memory") return OpKind::kMemory;
  if (kind == "view") return OpKind::kView;
  if (kind == "composite") return OpKind::kComposite;
  throw std::invalid_argument(
      "kind must be 'matmul', 'vector', 'memory', 'view' or 'composite'; got '" + kind + "'");
}

// A rule written in Python: fn(args, outputs) -> (macs, flops, bytes_read, bytes_written), -1
// for the generic bytes; tensors reach it as tensor_arg(shape tuple, scalar type code). The
// GIL is taken for the call only (the observer runs without it); a Python exception becomes a
// C++ one with its message, so nothing Python leaves the GIL. The callables are never released:
// the core keeps every rule alive for the life of the process (rules.h).
struct PyRule {
  py::object fn, tensor_arg;
};

py::object tensor_value(const PyRule& r, const Shape& s) {
  if (!s.defined) return py::none();
  py::tuple shape(s.ndim);
  for (int d = 0; d < s.ndim; ++d) shape[d] = s[d];
  return r.tensor_arg(shape, s.scalar_type);
}

OpCost call_python_rule(const PyRule& r, const OpCall& c) {
  py::gil_scoped_acquire gil;
  try {
    py::list args;
    for (int i = 0; i < c.num_args(); ++i) {
      switch (c.type(i)) {
        case ArgType::kTensor:
          args.append(tensor_value(r, c.input(i)));
          break;
        case ArgType::kTensorList: {
          py::list l;
          for (int k = 0; k < c.list_size(i); ++k) l.append(tensor_value(r, c.list_tensor(i, k)));
          args.append(l);
          break;
        }
        case ArgType::kInt:
          args.append(c.int_arg(i, 0));
          break;
        case ArgType::kBool:
          args.append(c.int_arg(i, 0) != 0);
          break;
        case ArgType::kDouble:
          args.append(c.double_arg(i, 0.0));
          break;
        case ArgType::kIntList:
        case ArgType::kBoolList: {
          py::list l;
          for (int k = 0; k < c.list_size(i); ++k) {
            int64_t v = c.list_int(i, k, 0);
            if (c.type(i) == ArgType::kBoolList) {
              l.append(v != 0);
            } else {
              l.append(v);
            }
          }
          args.append(l);
          break;
        }
        default:  // None, strings, devices, other values
          args.append(py::none());
      }
    }
    py::list outputs;
    for (int k = 0; k < c.num_outputs(); ++k) outputs.append(tensor_value(r, c.output(k)));
    py::tuple cost = r.fn(args, outputs);
    OpCost out;
    out.macs = cost[0].cast<int64_t>();
    out.flops = cost[1].cast<int64_t>();
    out.bytes_read = cost[2].cast<int64_t>();
    out.bytes_written = cost[3].cast<int64_t>();
    return out;
  } catch (py::error_already_set& e) {
    throw std::runtime_error(e.what());
  } catch (const py::cast_error& e) {
    throw std::runtime_error(std::string("the rule's result is not a tuple of ints: ") + e.what());
  }
}

py::dict rule_columns() {
  std::vector<std::string> op, kind, formula;
  std::vector<bool> user, overridden;
  for (const RuleRow& r : rule_rows()) {
    op.push_back(r.op);
    kind.push_back(kind_name(r.kind));
    formula.push_back(r.formula);
    user.push_back(r.user);
    overridden.push_back(r.overridden);
  }
  py::dict d;
  d["op"] = op;
  d["kind"] = kind;
  d["formula"] = formula;
  d["user"] = user;
  d["overridden"] = overridden;
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
  m.attr("COUNT_FIELDS") = count_fields();

  // A report reaches Python as the C++ object; each part is converted when read (profile() and
  // a training loop's per-step snapshot mostly need the totals only).
  py::class_<Report>(m, "Report")
      .def_property_readonly("total", [](const Report& r) { return counts_to_dict(r.total); })
      .def_property_readonly("modules", &module_columns)
      .def_property_readonly("ops", &op_columns)
      .def_property_readonly("unsupported_ops",
                             [](const Report& r) {
                               py::dict d;
                               for (const auto& [op, n] : r.unsupported_ops) d[py::str(op)] = n;
                               return d;
                             })
      .def_readonly("params_applied", &Report::params_applied)
      .def_readonly("params_touched", &Report::params_touched)
      .def_readonly("wall_ns", &Report::wall_ns)
      .def_readonly("busy_ns", &Report::busy_ns)
      .def_readonly("exposed_comm_ns", &Report::exposed_comm_ns)
      .def_readonly("peer_wait_ns", &Report::peer_wait_ns)
      .def_readonly("comm_untimed", &Report::comm_untimed)
      .def_readonly("comm_untimed_why", &Report::comm_untimed_why)
      .def_readonly("start_ns", &Report::start_ns)
      .def_readonly("clock", &Report::clock)
      .def_readonly("op_times", &Report::op_times)
      .def_property_readonly("coverage_ns",
                             [](const Report& r) {
                               return py::make_tuple(r.coverage_ns[0], r.coverage_ns[1],
                                                     r.coverage_ns[2]);
                             })
      .def_readonly("effective_basis", &Report::effective_basis)
      .def_readonly("rule_errors", &Report::rule_errors)
      .def_property_readonly("device_steps",
                             [](const Report& r) { return device_steps_to_list(r.device_steps); })
      .def_property_readonly("has_trace", [](const Report& r) { return !r.events.empty(); })
      .def("to_chrome_trace", &Report::to_chrome_trace)
      .def("to_json", &Report::to_json);

  py::class_<Profiler>(m, "Profiler")
      .def(py::init([](bool all_threads, bool time, bool time_ops, bool trace, bool nvtx,
                       bool nvtx_ops, const std::string& device, bool effective) {
             ProfilerOptions o;
             o.all_threads = all_threads;
             o.time = time;
             o.time_ops = time_ops;
             o.trace = trace;
             o.nvtx = nvtx;
             o.nvtx_ops = nvtx_ops;
             o.device = device;
             o.effective = effective;
             return std::make_unique<Profiler>(o, /*start_now=*/false);
           }),
           py::kw_only(), py::arg("all_threads") = false, py::arg("time") = false,
           py::arg("time_ops") = false, py::arg("trace") = false, py::arg("nvtx") = false,
           py::arg("nvtx_ops") = false, py::arg("device") = "", py::arg("effective") = false)
      .def("start", &Profiler::start)
      .def("stop", &Profiler::stop)
      .def("snapshot", &Profiler::snapshot)
      .def("pause", &Profiler::pause)
      .def("resume", &Profiler::resume)
      .def("detach", &Profiler::detach)
      .def("attach", &Profiler::attach)
      .def("mark_step", &Profiler::mark_step)
      .def("totals",
           [](Profiler& p) {
             Profiler::Totals t = p.totals();
             py::dict d = counts_to_dict(t.counts);
             d["busy_ns"] = t.busy_ns;
             d["exposed_comm_ns"] = t.exposed_comm_ns;
             d["peer_wait_ns"] = t.peer_wait_ns;
             return d;
           })
      .def_property_readonly("attached", &Profiler::attached)
      .def("set_phase", [](Profiler& p, const std::string& s) { p.set_phase(parse_phase(s)); })
      .def("watch", &watch_tensors, py::arg("tensors"), py::arg("nonzero") = py::tuple())
      .def(
          "device_steps",
          [](Profiler& p, bool wait, size_t first) {
            return device_steps_to_list(p.device_steps(wait, first));
          },
          py::kw_only(), py::arg("wait"), py::arg("first") = 0)
      .def_property_readonly("running", &Profiler::running)
      .def_property_readonly("clock", &Profiler::clock)
      .def_property_readonly("nvtx", [](const Profiler& p) { return p.options().nvtx; })
      .def_property_readonly("device_timeline",
                             [](const Profiler& p) { return p.options().device_timeline(); });

  const BenchmarkOptions defaults;
  py::class_<BenchmarkOptions>(m, "BenchmarkOptions")
      .def(py::init([](int warmup, double warmup_time, double min_run_time, double max_run_time,
                       int min_runs, double iqr_tolerance, const std::string& device,
                       bool l2_flush) {
             return BenchmarkOptions{warmup,   warmup_time,   min_run_time, max_run_time,
                                     min_runs, iqr_tolerance, device,       l2_flush};
           }),
           py::kw_only(), py::arg("warmup") = defaults.warmup,
           py::arg("warmup_time") = defaults.warmup_time,
           py::arg("min_run_time") = defaults.min_run_time,
           py::arg("max_run_time") = defaults.max_run_time, py::arg("min_runs") = defaults.min_runs,
           py::arg("iqr_tolerance") = defaults.iqr_tolerance, py::arg("device") = defaults.device,
           py::arg("l2_flush") = defaults.l2_flush)
      .def_readonly("warmup", &BenchmarkOptions::warmup)
      .def_readonly("warmup_time", &BenchmarkOptions::warmup_time)
      .def_readonly("min_run_time", &BenchmarkOptions::min_run_time)
      .def_readonly("max_run_time", &BenchmarkOptions::max_run_time)
      .def_readonly("min_runs", &BenchmarkOptions::min_runs)
      .def_readonly("iqr_tolerance", &BenchmarkOptions::iqr_tolerance)
      .def_readonly("device", &BenchmarkOptions::device)
      .def_readonly("l2_flush", &BenchmarkOptions::l2_flush);

  py::class_<TimingStats>(m, "TimingStats")
      .def_readonly("n", &TimingStats::n)
      .def_readonly("median", &TimingStats::median)
      .def_readonly("mean", &TimingStats::mean)
      .def_readonly("std", &TimingStats::std)
      .def_readonly("min", &TimingStats::min)
      .def_readonly("max", &TimingStats::max)
      .def_readonly("p10", &TimingStats::p10)
      .def_readonly("p90", &TimingStats::p90)
      .def_readonly("p99", &TimingStats::p99)
      .def_readonly("iqr", &TimingStats::iqr);

  py::class_<BenchmarkResult>(m, "BenchmarkResult")
      .def_readonly("samples", &BenchmarkResult::samples)
      .def_readonly("stats", &BenchmarkResult::stats)
      .def_readonly("clock", &BenchmarkResult::clock)
      .def_readonly("total_time", &BenchmarkResult::total_time);

  // The GIL stays held: fn is Python, called once per run.
  m.def(
      "benchmark",
      [](const std::function<void()>& fn, const BenchmarkOptions& options) {
        return benchmark(fn, options);
      },
      py::arg("fn"), py::arg("options"));
  m.def("device_event_calls", &device_event_calls, py::arg("device"));

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
  bind_module_tree(m);  // module_tree.cpp
  m.def("named_tensor_facts", &named_tensor_facts, py::arg("modules"), py::arg("pairs"),
        py::arg("where"));
  m.def("parameter_state", &parameter_state, py::arg("modules"), py::arg("pairs"));
  m.def("scalar_type_codes", [](const std::vector<uintptr_t>& impls) {
    std::vector<const c10::TensorImpl*> tensors;
    for (uintptr_t a : impls) tensors.push_back(reinterpret_cast<const c10::TensorImpl*>(a));
    return tensor_facts(tensors).scalar_type;
  });

  // The rule table (rules.h). fn: see call_python_rule; python/effmetrics/rules.py wraps it.
  m.def(
      "register_rule",
      [](const std::string& op, const std::string& kind, py::object fn, py::object tensor_arg,
         const std::string& formula) {
        const OpKind k = parse_kind(kind);
        const PyRule* rule = new PyRule{std::move(fn), std::move(tensor_arg)};  // never freed
        register_rule(
            op, k, [rule](const OpCall& c) { return call_python_rule(*rule, c); }, formula);
      },
      py::arg("op"), py::arg("kind"), py::arg("fn"), py::arg("tensor_arg"), py::arg("formula"));
  m.def("unregister_rule", &unregister_rule, py::arg("op"));
  m.def("rules", &rule_columns);
  // Test hook: a rule written in C++ (A[m,k] @ B[k,n]: m*k*n MACs), registered for `op`.
  m.def("_register_cpp_test_rule", [](const std::string& op) {
    register_rule(
        op, OpKind::kMatmul,
        [](const OpCall& c) {
          Shape a = c.input(0), b = c.input(1);
          if (a.ndim != 2 || b.ndim != 2) throw std::invalid_argument("expects two 2-D tensors");
          return OpCost::matmul(a[0] * a[1] * b[1]);
        },
        "test hook (C++): A[m,k] @ B[k,n], macs = m*k*n");
  });
  m.def("current_scope_name", [] { return scope_name(current_scope()); });
  for (PyMethodDef* call = kScopeCalls; call->ml_name != nullptr; ++call) {
    PyObject* fn = PyCFunction_NewEx(call, nullptr, m.attr("__name__").ptr());
    if (fn == nullptr) throw py::error_already_set();
    m.attr(call->ml_name) = py::reinterpret_steal<py::object>(fn);
  }
  m.def("scope_depth", &scope_depth);
  m.def("truncate_scopes", &truncate_scopes);
  m.def("note_counted_graph", &note_counted_graph);
  m.def("set_attention_share", &set_attention_share, py::arg("kept"), py::arg("pairs"));
  // RecordFunction callbacks on this thread on or off (every observer's); the previous state.
  m.def("record_functions", [](bool enabled) {
    const bool before = at::isRecordFunctionEnabled();
    at::enableRecordFunction(enabled);
    return before;
  });
  m.def("max_profilers", [] { return Profiler::kMaxProfilers; });
  // bench/overhead.py's floor: `with _C.EmptyObserver():` observes this thread and does nothing
  struct EmptyObserverScope {
    std::unique_ptr<EmptyObserver> observer;
  };
  py::class_<EmptyObserverScope>(m, "EmptyObserver")
      .def(py::init<>())
      .def("__enter__",
           [](EmptyObserverScope& s) {
             if (!s.observer) s.observer = std::make_unique<EmptyObserver>();
           })
      .def("__exit__", [](EmptyObserverScope& s, py::args) { s.observer.reset(); });
}
