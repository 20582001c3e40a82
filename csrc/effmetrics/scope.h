// Module scopes: a per-thread stack of module names. Python's global module hooks push and pop
// a module's qualified name; LibTorch users, whose modules have no hooks, use ScopeGuard. Every
// op is attributed to the scope on top of its thread's stack when it starts.
//
// Scopes form a tree of interned nodes (node 0 is the root, the whole model): pushing name N
// under node P always yields the same node, so a block applied L times accumulates in one node.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace effmetrics {

constexpr uint32_t kRootScope = 0;

struct ScopeNode {
  // The pushed name, e.g. "blocks.3.attn" ("" for the root): a view of the interned name, which
  // lives as long as the process (scope_nodes() and reports copy no string).
  std::string_view name;
  uint32_t parent;  // kRootScope for top-level scopes (the root is its own parent)
  int depth;        // root 0
};

// Intern a scope name once, push its id many times (the cheap path for per-call hooks).
uint32_t intern_scope_name(std::string_view name);
void push_scope_id(uint32_t name_id);
void push_scope(std::string_view name);
// Pops the innermost scope; popping an empty stack is a no-op (returns false).
bool pop_scope();
// Current thread's innermost scope node, and a node's name ("" for the root).
uint32_t current_scope();
// This thread's stack of scope nodes (innermost last), valid for the thread's life: a per-op
// caller keeps the pointer rather than reach the thread-local on every op.
const std::vector<uint32_t>* current_scope_stack();
std::string scope_name(uint32_t node);
size_t scope_depth();
// Pop until the stack has `depth` entries (restores balance after an exception).
void truncate_scopes(size_t depth);
// Calls per scope node pushed on this thread so far (index = node id).
std::vector<int64_t> scope_calls_snapshot();
// A copy of the scope nodes 0..n-1 (the tree only grows).
std::vector<ScopeNode> scope_nodes();

// Scope enter/exit times on this thread, for a tracing profiler (module spans).
struct ScopeEvent {
  uint32_t node;
  int64_t time_ns;  // steady_clock, since its epoch
  bool enter;
};
// While set, this thread's pushes and pops append to *sink (nullptr: stop recording).
void set_scope_event_sink(std::vector<ScopeEvent>* sink);
int64_t steady_now_ns();

// RAII scope for LibTorch code: ScopeGuard g("encoder.0");
class ScopeGuard {
 public:
  explicit ScopeGuard(std::string_view name) : depth_(scope_depth()) { push_scope(name); }
  ~ScopeGuard() { truncate_scopes(depth_); }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;

 private:
  size_t depth_;
};

}  // namespace effmetrics
