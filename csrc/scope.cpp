#include "effmetrics/scope.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "effmetrics/nvtx.h"

namespace effmetrics {
namespace {

// The shared tree. Only pushes of a (parent, name) pair not yet seen on a thread take the lock.
struct ScopeTree {
  std::mutex mu;
  std::deque<std::string> names;  // stable addresses: NVTX messages and node names point in
  std::unordered_map<std::string, uint32_t> name_ids;
  std::vector<ScopeNode> nodes{ScopeNode{"", kRootScope, 0}};
  std::unordered_map<uint64_t, uint32_t> children;  // (parent << 32 | name id) -> node
};

ScopeTree& tree() {
  static ScopeTree* t = new ScopeTree();  // never destroyed: threads may outlive statics
  return *t;
}

struct Child {
  uint32_t node;
  const char* name;  // for NVTX ranges
};

struct ThreadScopes {
  std::vector<uint32_t> stack;
  std::vector<char> nvtx_pushed;  // per stack entry: an NVTX range is open for it
  std::vector<ScopeEvent>* sink = nullptr;
  std::vector<int64_t> calls;
  std::unordered_map<uint64_t, Child> children;  // thread-local cache of tree().children
};

thread_local ThreadScopes tls;

}  // namespace

uint32_t intern_scope_name(std::string_view name) {
  ScopeTree& t = tree();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.name_ids.find(std::string(name));
  if (it != t.name_ids.end()) return it->second;
  uint32_t id = static_cast<uint32_t>(t.names.size());
  t.names.emplace_back(name);
  t.name_ids.emplace(std::string(name), id);
  return id;
}

void push_scope_id(uint32_t name_id) {
  uint32_t parent = tls.stack.empty() ? kRootScope : tls.stack.back();
  uint64_t key = (static_cast<uint64_t>(parent) << 32) | name_id;
  auto it = tls.children.find(key);
  if (it == tls.children.end()) {
    ScopeTree& t = tree();
    std::lock_guard<std::mutex> lock(t.mu);
    auto found = t.children.find(key);
    uint32_t node;
    if (found != t.children.end()) {
      node = found->second;
    } else {
      node = static_cast<uint32_t>(t.nodes.size());
      t.nodes.push_back(ScopeNode{t.names.at(name_id), parent, t.nodes[parent].depth + 1});
      t.children.emplace(key, node);
    }
    it = tls.children.emplace(key, Child{node, t.names.at(name_id).c_str()}).first;
  }
  const uint32_t node = it->second.node;
  tls.stack.push_back(node);
  const bool nvtx = nvtx_enabled();
  tls.nvtx_pushed.push_back(nvtx);
  if (nvtx) nvtx_range_push(it->second.name);
  if (tls.calls.size() <= node) tls.calls.resize(node + 1, 0);
  ++tls.calls[node];
  if (tls.sink) tls.sink->push_back(ScopeEvent{node, steady_now_ns(), true});
}

void push_scope(std::string_view name) { push_scope_id(intern_scope_name(name)); }

bool pop_scope() {
  if (tls.stack.empty()) return false;
  if (tls.sink) tls.sink->push_back(ScopeEvent{tls.stack.back(), steady_now_ns(), false});
  if (tls.nvtx_pushed.back()) nvtx_range_pop();
  tls.stack.pop_back();
  tls.nvtx_pushed.pop_back();
  return true;
}

uint32_t current_scope() { return tls.stack.empty() ? kRootScope : tls.stack.back(); }

const std::vector<uint32_t>* current_scope_stack() { return &tls.stack; }

size_t scope_depth() { return tls.stack.size(); }

std::string scope_name(uint32_t node) {
  ScopeTree& t = tree();
  std::lock_guard<std::mutex> lock(t.mu);
  return std::string(node < t.nodes.size() ? t.nodes[node].name : std::string_view());
}

void truncate_scopes(size_t depth) {
  while (tls.stack.size() > depth) pop_scope();
}

std::vector<int64_t> scope_calls_snapshot() { return tls.calls; }

void set_scope_event_sink(std::vector<ScopeEvent>* sink) { tls.sink = sink; }

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<ScopeNode> scope_nodes() {
  ScopeTree& t = tree();
  std::lock_guard<std::mutex> lock(t.mu);
  return t.nodes;
}

}  // namespace effmetrics
