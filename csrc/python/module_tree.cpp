// The Python layer's work on a module tree, done with the CPython API where the same loops in
// Python were a large share of each em.profile's fixed cost (they run before and after every
// pass, on caches the last pass left cold): params.scan()'s check of a kept walk, and the
// scoped subclasses' class swaps of scopes.ModuleScopes. No torch here, no counting: these read
// and change Python objects only.
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

namespace py = pybind11;

// A module's _modules, _parameters or _buffers (`name`), checked to be a dict.
py::object module_dict(PyObject* module, PyObject* name) {
  py::object d = py::reinterpret_steal<py::object>(PyObject_GetAttr(module, name));
  if (!d) throw py::error_already_set();
  if (!PyDict_Check(d.ptr())) {
    throw py::type_error(std::string("effmetrics: a module's ") + PyUnicode_AsUTF8(name) +
                         " is not a dict (nn.Module keeps its submodules, parameters and buffers "
                         "in dicts: something replaced it)");
  }
  return d;
}

namespace {

// A module's class, or the class it had before ModuleScopes gave it its scoped subclass (whose
// own __dict__ names it: python/effmetrics/scopes.py). The tree is the same while its modules
// are scoped: a Counter's counted steps see it scoped, its other steps not. Borrowed.
PyObject* class_before_scoping(PyObject* m) {
  static PyObject* const kOriginal = PyUnicode_InternFromString("_effmetrics_original");
  PyTypeObject* cls = Py_TYPE(m);
  if (PyType_HasFeature(cls, Py_TPFLAGS_HEAPTYPE) && cls->tp_dict != nullptr) {
    PyObject* original = PyDict_GetItemWithError(cls->tp_dict, kOriginal);  // borrowed
    if (original != nullptr) return original;
    if (PyErr_Occurred()) throw py::error_already_set();
  }
  return reinterpret_cast<PyObject*>(cls);
}

// A module tree as params.scan() checks it before every pass (python/effmetrics/params.py,
// _Walk.structure), flat, in the order of `modules`: each module's class (before scoping:
// class_before_scoping); then for its _modules, _parameters and _buffers in turn: the dict's
// length, its keys, and its values' ids (_modules) or classes (the other two). Read with the
// CPython API: the same list built in Python cost ~6,500 instructions a module, a tenth of
// em.profile's own cost on a ViT. visit_structure hands each entry to a visitor in that order
// (object: a class or key; size; id) and stops when it returns false: module_structure builds the
// list, module_tree_if_unchanged compares a kept one in place.
template <typename Visitor>
bool visit_structure(PyObject* modules, Visitor& v) {
  static PyObject* const kDicts[3] = {PyUnicode_InternFromString("_modules"),
                                      PyUnicode_InternFromString("_parameters"),
                                      PyUnicode_InternFromString("_buffers")};
  const Py_ssize_t n = PyList_GET_SIZE(modules);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* m = PyList_GET_ITEM(modules, i);
    if (!v.object(class_before_scoping(m))) return false;
    for (int k = 0; k < 3; ++k) {
      py::object d = module_dict(m, kDicts[k]);
      if (!v.size(PyDict_GET_SIZE(d.ptr()))) return false;
      PyObject *key, *value;
      Py_ssize_t pos = 0;
      while (PyDict_Next(d.ptr(), &pos, &key, &value)) {
        if (!v.object(key)) return false;
      }
      pos = 0;
      while (PyDict_Next(d.ptr(), &pos, &key, &value)) {
        if (!(k == 0 ? v.id(value) : v.object(reinterpret_cast<PyObject*>(Py_TYPE(value))))) {
          return false;
        }
      }
    }
  }
  return true;
}

py::list module_structure(const py::list& modules) {
  struct Build {
    py::list out;
    bool add(PyObject* o) {  // a new reference, or null with the error set
      if (o == nullptr || PyList_Append(out.ptr(), o) < 0) {
        Py_XDECREF(o);
        throw py::error_already_set();
      }
      Py_DECREF(o);
      return true;
    }
    bool object(PyObject* o) { return add(py::handle(o).inc_ref().ptr()); }
    bool size(Py_ssize_t n) { return add(PyLong_FromSsize_t(n)); }
    bool id(PyObject* o) { return add(PyLong_FromVoidPtr(o)); }  // id(o)
  } build;
  visit_structure(modules.ptr(), build);
  return build.out;
}

// params.scan()'s check before every pass: the root and its kept walk's modules (weak
// references, in pre-order) when module_structure of them would equal `structure` (==, entry
// by entry), else None (a module freed, or anything the structure holds changed). Compared in
// place: no list built, no int made per submodule.
py::object module_tree_if_unchanged(py::handle root, const py::list& below,
                                    const py::list& structure) {
  const Py_ssize_t n = PyList_GET_SIZE(below.ptr());
  py::list modules(n + 1);
  PyList_SET_ITEM(modules.ptr(), 0, root.inc_ref().ptr());
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* ref = PyList_GET_ITEM(below.ptr(), i);
    if (!PyWeakref_CheckRef(ref)) {
      throw py::type_error("module_tree_if_unchanged: below must hold weak references");
    }
#if PY_VERSION_HEX >= 0x030D0000
    PyObject* m = nullptr;  // a new reference, or null: freed
    if (PyWeakref_GetRef(ref, &m) < 0) throw py::error_already_set();
    if (m == nullptr) return py::none();
#else
    PyObject* m = PyWeakref_GetObject(ref);  // borrowed; None: freed
    if (m == Py_None) return py::none();
    Py_INCREF(m);
#endif
    PyList_SET_ITEM(modules.ptr(), i + 1, m);
  }
  struct Compare {
    PyObject* kept;
    Py_ssize_t at = 0;
    PyObject* next() { return at < PyList_GET_SIZE(kept) ? PyList_GET_ITEM(kept, at++) : nullptr; }
    bool object(PyObject* o) {
      PyObject* k = next();
      if (k == o) return true;
      if (k == nullptr) return false;
      const int same = PyObject_RichCompareBool(k, o, Py_EQ);
      if (same < 0) throw py::error_already_set();
      return same == 1;
    }
    bool size(Py_ssize_t n) {
      PyObject* k = next();
      return k != nullptr && PyLong_CheckExact(k) && PyLong_AsSsize_t(k) == n;
    }
    bool id(PyObject* o) {
      PyObject* k = next();
      return k != nullptr && PyLong_CheckExact(k) && PyLong_AsVoidPtr(k) == o;
    }
  } compare{structure.ptr()};
  const bool same =
      visit_structure(modules.ptr(), compare) && compare.at == PyList_GET_SIZE(structure.ptr());
  if (PyErr_Occurred()) PyErr_Clear();  // an int too large for a size or address: not the same
  return same ? py::object(std::move(modules)) : py::none();
}

// Each module's `training` flag, a byte a module (0 or 1), as Counter's signatures compare them
// before every model call: a submodule put in eval mode (a frozen BatchNorm, dropout off) does
// other work at the same inputs. In Python the same loop cost ~45 ns a module.
py::bytes training_modes(const py::list& modules) {
  static PyObject* const kTraining = PyUnicode_InternFromString("training");
  const Py_ssize_t n = PyList_GET_SIZE(modules.ptr());
  std::string modes(n, '\0');
  for (Py_ssize_t i = 0; i < n; ++i) {
    py::object flag = py::reinterpret_steal<py::object>(
        PyObject_GetAttr(PyList_GET_ITEM(modules.ptr(), i), kTraining));
    const int on = flag ? PyObject_IsTrue(flag.ptr()) : -1;
    if (on < 0) throw py::error_already_set();
    modes[i] = static_cast<char>(on);
  }
  return py::bytes(modes);
}

// ModuleScopes.acquire's pass over an eager model's modules (python/effmetrics/scopes.py):
// each module whose id is in `added` gets its class's scoped subclass (scoped_of[class], made by
// make_scoped(class) the first time, None where it cannot be), unless it has a forward of its
// own in its __dict__ or the class swap is refused (TypeError: another layout); those go to
// `hooked` (id -> scope id, for the global hooks). Each swap is recorded in `swapped` (the same)
// and in the returned list of (module, class before, scoped class). A compiled module anywhere
// in `modules` (a torch.compile wrapper, or one with _compiled_call_impl set by
// Module.compile()) undoes the swaps and returns None: Dynamo guards on the classes, so the
// caller scopes every module by the global hooks then. Any other error undoes them too.
py::object scope_classes(const py::list& modules, const py::dict& added, const py::dict& scoped_of,
                         const py::object& make_scoped, const py::dict& swapped,
                         const py::dict& hooked) {
  static PyObject* const kClass = PyUnicode_InternFromString("__class__");
  static PyObject* const kForward = PyUnicode_InternFromString("forward");
  static PyObject* const kCompiled = PyUnicode_InternFromString("_compiled_call_impl");
  py::list classes;
  auto undo = [&] {
    for (py::handle entry : classes) {
      PyObject* m = PyTuple_GET_ITEM(entry.ptr(), 0);
      if (PyObject_GenericSetAttr(m, kClass, PyTuple_GET_ITEM(entry.ptr(), 1)) < 0) PyErr_Clear();
      py::object key = py::reinterpret_steal<py::object>(PyLong_FromVoidPtr(m));
      if (!key || PyDict_DelItem(swapped.ptr(), key.ptr()) < 0) PyErr_Clear();
    }
  };
  auto fail = [&] {               // an unexpected error: the swaps undone, the error raised
#if PY_VERSION_HEX >= 0x030C0000  // PyErr_Fetch is deprecated from 3.12 (the GPU machine's)
    PyObject* error = PyErr_GetRaisedException();
    undo();
    PyErr_SetRaisedException(error);
#else
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    undo();
    PyErr_Restore(type, value, trace);
#endif
    throw py::error_already_set();
  };
  const Py_ssize_t n = PyList_GET_SIZE(modules.ptr());
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* m = PyList_GET_ITEM(modules.ptr(), k);
    py::object dict = py::reinterpret_steal<py::object>(PyObject_GenericGetDict(m, nullptr));
    if (!dict) fail();
    PyObject* compiled = PyDict_GetItemWithError(dict.ptr(), kCompiled);  // borrowed
    if (compiled == nullptr && PyErr_Occurred()) fail();
    const char* name = Py_TYPE(m)->tp_name;  // a class's __name__ (dotted for a static type)
    const char* dot = std::strrchr(name, '.');
    if ((compiled != nullptr && compiled != Py_None) ||
        std::strcmp(dot != nullptr ? dot + 1 : name, "OptimizedModule") == 0) {
      undo();
      return py::none();
    }
    py::object key = py::reinterpret_steal<py::object>(PyLong_FromVoidPtr(m));  // id(m)
    if (!key) fail();
    PyObject* scope = PyDict_GetItemWithError(added.ptr(), key.ptr());  // borrowed
    if (scope == nullptr) {
      if (PyErr_Occurred()) fail();
      continue;  // the root, or a module already scoped
    }
    PyObject* original = reinterpret_cast<PyObject*>(Py_TYPE(m));
    py::object scoped =
        py::reinterpret_borrow<py::object>(PyDict_GetItemWithError(scoped_of.ptr(), original));
    if (!scoped) {
      if (PyErr_Occurred()) fail();
      PyObject* made = PyObject_CallOneArg(make_scoped.ptr(), original);
      if (made == nullptr) fail();
      scoped = py::reinterpret_steal<py::object>(made);
    }
    const int own_forward = PyDict_Contains(dict.ptr(), kForward);
    if (own_forward < 0) fail();
    bool swap = !scoped.is_none() && own_forward == 0;
    if (swap) {
      // Recorded first, so that an error from here on undoes this swap with the others.
      PyObject* entry = PyTuple_Pack(3, m, original, scoped.ptr());
      if (entry == nullptr || PyList_Append(classes.ptr(), entry) < 0) {
        Py_XDECREF(entry);
        fail();
      }
      Py_DECREF(entry);  // the list holds it, and the class before with it
      // object.__setattr__'s way, not the module's own __setattr__ (nn.Module's is Python, ~10x
      // the cost, for nothing: __class__ is no parameter, buffer or submodule).
      if (PyObject_GenericSetAttr(m, kClass, scoped.ptr()) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) fail();
        PyErr_Clear();  // a layout that differs: not swapped, not recorded
        const Py_ssize_t last = PyList_GET_SIZE(classes.ptr()) - 1;
        if (PyList_SetSlice(classes.ptr(), last, last + 1, nullptr) < 0) fail();
        swap = false;
      }
    }
    if (PyDict_SetItem((swap ? swapped : hooked).ptr(), key.ptr(), scope) < 0) fail();
  }
  return std::move(classes);
}

// ModuleScopes.release: each (module, class before, scoped class) of scope_classes gets its
// class back, unless something changed the module's class since.
void restore_classes(const py::list& classes) {
  static PyObject* const kClass = PyUnicode_InternFromString("__class__");
  for (py::handle entry : classes) {
    if (!PyTuple_Check(entry.ptr()) || PyTuple_GET_SIZE(entry.ptr()) != 3) {
      throw py::type_error("restore_classes: each entry is (module, class before, scoped class)");
    }
    PyObject* m = PyTuple_GET_ITEM(entry.ptr(), 0);
    if (reinterpret_cast<PyObject*>(Py_TYPE(m)) == PyTuple_GET_ITEM(entry.ptr(), 2) &&
        PyObject_GenericSetAttr(m, kClass, PyTuple_GET_ITEM(entry.ptr(), 1)) < 0) {
      throw py::error_already_set();
    }
  }
}

}  // namespace

void bind_module_tree(py::module_& m) {
  m.def("module_structure", &module_structure, py::arg("modules"));
  m.def("module_tree_if_unchanged", &module_tree_if_unchanged, py::arg("root"), py::arg("below"),
        py::arg("structure"));
  m.def("scope_classes", &scope_classes, py::arg("modules"), py::arg("added"), py::arg("scoped_of"),
        py::arg("make_scoped"), py::arg("swapped"), py::arg("hooked"));
  m.def("restore_classes", &restore_classes, py::arg("classes"));
  m.def("training_modes", &training_modes, py::arg("modules"));
}
