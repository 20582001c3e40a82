// What a cost rule sees of one op call: shapes, dtypes and scalar arguments, copied out of the
// RecordFunction in its start callback (inputs are only valid there) and its end callback
// (outputs). Plain data, no torch headers, so rules are unit-testable without ATen.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace effmetrics {

// One tensor as a rule sees it. Sizes live in OpCall::dims_ (one flat pool, reused across
// calls so the hot path does not allocate).
struct TensorMeta {
  const void* id = nullptr;  // TensorImpl address: identity for "distinct inputs" and params
  int64_t numel = 0;
  uint32_t dims_offset = 0;
  uint8_t ndim = 0;
  uint8_t itemsize = 0;
  int8_t scalar_type = -1;  // c10::ScalarType's value; -1: unknown
  bool defined = false;
  int64_t nbytes() const { return numel * itemsize; }
};

// A growable array of plain values for the capture path, which appends a few per tensor of
// every op: clear() keeps the memory, an append is a capacity check and stores (no range-insert
// machinery: std::vector's insert of a tensor's sizes was a memmove call), and append(n) hands
// out room for n values at once.
template <typename T>
class PodStack {
 public:
  PodStack() = default;
  PodStack(const PodStack&) = default;
  PodStack& operator=(const PodStack&) = default;
  // A moved-from stack is empty and usable (a frame's OpCall moves when the op stack grows).
  PodStack(PodStack&& o) noexcept { *this = std::move(o); }
  PodStack& operator=(PodStack&& o) noexcept {
    if (this == &o) return *this;
    buf_ = std::move(o.buf_);
    size_ = std::exchange(o.size_, 0);
    cap_ = buf_.size();
    o.buf_.clear();
    o.cap_ = 0;
    return *this;
  }

  size_t size() const { return size_; }
  const T* data() const { return buf_.data(); }
  const T* begin() const { return buf_.data(); }
  const T* end() const { return buf_.data() + size_; }
  const T& operator[](size_t i) const { return buf_[i]; }
  T& back() { return buf_[size_ - 1]; }
  void clear() { size_ = 0; }
  T* append(size_t n) {
    if (size_ + n > cap_) grow(size_ + n);
    T* p = buf_.data() + size_;
    size_ += n;
    return p;
  }
  void push_back(T v) { *append(1) = v; }  // by value: v may be an element the growth moves

 private:
  [[gnu::noinline]] void grow(size_t n) {  // out of line: append stays a few instructions
    buf_.resize(std::max<size_t>(2 * n, 8));
    cap_ = buf_.size();
  }
  std::vector<T> buf_;
  size_t size_ = 0, cap_ = 0;
};

enum class ArgType : uint8_t {
  kNone,
  kTensor,
  kTensorList,
  kInt,  // also a c10d ProcessGroup argument, captured as its size (capture.h)
  kDouble,
  kBool,
  kIntList,
  kBoolList,
  kOther
};

// One positional argument of the op's schema.
struct Arg {
  ArgType type = ArgType::kNone;
  int64_t i = 0;        // kInt, kBool; for lists: count
  double d = 0.0;       // kDouble
  uint32_t offset = 0;  // kTensor: index in tensors_; kTensorList: first index; kIntList/kBoolList:
                        // index in ints_
};

// A read-only view of one tensor's sizes.
struct Shape {
  const int64_t* data = nullptr;
  int ndim = 0;
  int64_t numel = 0;
  int itemsize = 0;
  bool defined = false;
  int scalar_type = -1;  // c10::ScalarType's value; -1: unknown
  int64_t operator[](int i) const { return data[i < 0 ? i + ndim : i]; }
  int64_t nbytes() const { return numel * itemsize; }
  int64_t prod(int begin, int end) const {
    int64_t p = 1;
    for (int k = begin; k < end; ++k) p *= data[k];
    return p;
  }
};

class OpCall {
 public:
  // --- reading (rules) ---
  int num_args() const { return static_cast<int>(args_.size()); }
  ArgType type(int i) const { return i < num_args() ? args_[i].type : ArgType::kNone; }
  bool is_tensor(int i) const {
    return type(i) == ArgType::kTensor && tensors_[args_[i].offset].defined;
  }
  Shape input(int i) const;  // positional arg i; undefined Shape if not a tensor
  // Bytes of the defined tensors of arg i: a tensor, or every element of a tensor list (a list
  // of lists, Tensor[][], is captured flat); 0 for anything else.
  int64_t arg_bytes(int i) const;
  // Tensors in arg i: 1 for a tensor, the element count of a tensor list, else 0.
  int arg_tensors(int i) const;
  int64_t int_arg(int i, int64_t fallback) const;          // int or bool arg
  int64_t list_int(int i, int k, int64_t fallback) const;  // element k of an int/bool list
  double double_arg(int i, double fallback) const;         // float arg (int args convert)
  int list_size(int i) const;             // elements of a list argument (0 if not a list)
  Shape list_tensor(int i, int k) const;  // element k of a tensor list argument
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  Shape output(int k) const;
  int64_t output_numel(int k) const { return k < num_outputs() ? outputs_[k].numel : 0; }
  // Bytes of the distinct defined tensors among the inputs (a tensor passed twice is read once).
  int64_t input_bytes() const;
  int64_t output_bytes() const;

  // --- writing (observer, tests) ---
  // A tensor the rules cannot read as a dense shape (nested, sparse, symbolic sizes) took part:
  // the op's count would be a guess, so the observer lists it as unsupported instead.
  bool unknown_shape() const { return unknown_shape_; }
  void set_unknown_shape() { unknown_shape_ = true; }

  void clear() {
    args_.clear();
    tensors_.clear();
    outputs_.clear();
    dims_.clear();
    ints_.clear();
    unknown_shape_ = false;
  }
  void add_none() { args_.push_back(Arg{}); }
  void add_other() { args_.push_back(Arg{ArgType::kOther}); }
  void add_int(int64_t v) { args_.push_back(Arg{ArgType::kInt, v}); }
  void add_bool(bool v) { args_.push_back(Arg{ArgType::kBool, v ? 1 : 0}); }
  void add_double(double v) { args_.push_back(Arg{ArgType::kDouble, 0, v}); }
  void add_int_list(const int64_t* v, size_t n, ArgType t = ArgType::kIntList);
  void add_int_list(std::initializer_list<int64_t> v) { add_int_list(v.begin(), v.size()); }
  void add_bool_list(std::initializer_list<bool> v);
  // Streaming form of add_int_list: begin, then one push per element.
  void begin_int_list(ArgType t = ArgType::kIntList) {
    args_.push_back(Arg{t, 0, 0.0, static_cast<uint32_t>(ints_.size())});
  }
  void push_list_int(int64_t v) {
    ints_.push_back(v);
    args_.back().i += 1;
  }
  // A tensor argument; sizes may be null for an undefined tensor.
  void add_tensor(const void* id, const int64_t* sizes, int ndim, int itemsize, bool defined = true,
                  int scalar_type = -1);
  void add_tensor(std::initializer_list<int64_t> sizes, int itemsize = 4);  // tests
  void begin_tensor_list();
  void add_list_tensor(const void* id, const int64_t* sizes, int ndim, int itemsize,
                       bool defined = true, int scalar_type = -1);
  void add_output(const void* id, const int64_t* sizes, int ndim, int itemsize,
                  int scalar_type = -1);
  void add_output(std::initializer_list<int64_t> sizes, int itemsize = 4);  // tests

  const PodStack<TensorMeta>& tensors() const { return tensors_; }

 private:
  TensorMeta make_meta(const void* id, const int64_t* sizes, int ndim, int itemsize, bool defined,
                       int scalar_type);
  Shape shape_of(const TensorMeta& t) const;

  PodStack<Arg> args_;
  PodStack<TensorMeta> tensors_;  // inputs, in argument order (list elements included)
  PodStack<TensorMeta> outputs_;
  PodStack<int64_t> dims_;  // sizes of every tensor above
  PodStack<int64_t> ints_;  // int and bool lists
  bool unknown_shape_ = false;
};

// The capture path's per-tensor calls, inline: they run for every tensor of every op.
inline TensorMeta OpCall::make_meta(const void* id, const int64_t* sizes, int ndim, int itemsize,
                                    bool defined, int scalar_type) {
  TensorMeta t;
  t.scalar_type = static_cast<int8_t>(scalar_type);
  t.id = id;
  t.defined = defined;
  t.itemsize = static_cast<uint8_t>(itemsize);
  t.dims_offset = static_cast<uint32_t>(dims_.size());
  t.ndim = static_cast<uint8_t>(defined ? ndim : 0);
  int64_t* dims = dims_.append(t.ndim);
  int64_t numel = defined ? 1 : 0;
  for (int k = 0; k < t.ndim; ++k) {
    dims[k] = sizes[k];
    numel *= sizes[k];
  }
  t.numel = numel;
  return t;
}

inline Shape OpCall::shape_of(const TensorMeta& t) const {
  return Shape{dims_.data() + t.dims_offset, t.ndim, t.numel, t.itemsize, t.defined, t.scalar_type};
}

inline void OpCall::add_tensor(const void* id, const int64_t* sizes, int ndim, int itemsize,
                               bool defined, int scalar_type) {
  args_.push_back(Arg{ArgType::kTensor, 0, 0.0, static_cast<uint32_t>(tensors_.size())});
  tensors_.push_back(make_meta(id, sizes, ndim, itemsize, defined, scalar_type));
}

inline void OpCall::add_list_tensor(const void* id, const int64_t* sizes, int ndim, int itemsize,
                                    bool defined, int scalar_type) {
  tensors_.push_back(make_meta(id, sizes, ndim, itemsize, defined, scalar_type));
  args_.back().i += 1;
}

inline void OpCall::add_output(const void* id, const int64_t* sizes, int ndim, int itemsize,
                               int scalar_type) {
  outputs_.push_back(make_meta(id, sizes, ndim, itemsize, true, scalar_type));
}

}  // namespace effmetrics
