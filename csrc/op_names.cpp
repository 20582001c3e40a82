#include "op_names.h"

#include <deque>
#include <mutex>
#include <unordered_map>

namespace effmetrics {
namespace {

struct OpNames {
  std::mutex mu;
  std::deque<std::string> names;  // stable storage: views into it stay valid
  std::unordered_map<std::string_view, OpInfo> infos;
  uint64_t rules_version = 0;  // of the rules in infos
};

OpNames& table() {
  static OpNames* n = new OpNames();  // never destroyed: callbacks may run during exit
  return *n;
}

// A composite rule counts nothing itself: the op is one without a rule whose kernel is trusted.
void set_rule(OpInfo& info, std::string_view op) {
  const OpRule* rule = find_rule(op);
  const bool composite = rule && rule->kind == OpKind::kComposite;
  info.rule = composite ? nullptr : rule;
  info.own_kernel = composite ? 0 : -1;
}

}  // namespace

std::pair<std::string_view, OpInfo> resolve_op(const char* name, bool is_op) {
  OpNames& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  const uint64_t version = rules_version();
  if (version != t.rules_version) {  // a rule was registered or removed: look every name up again
    for (auto& [op, info] : t.infos) set_rule(info, op);
    t.rules_version = version;
  }
  auto it = t.infos.find(std::string_view(name));
  if (it != t.infos.end()) return *it;
  t.names.emplace_back(name);
  const std::string& interned = t.names.back();
  OpInfo info;
  info.id = static_cast<uint32_t>(t.names.size() - 1);
  info.name = interned.c_str();
  set_rule(info, interned);
  info.attention = find_attention(interned);
  info.is_op = is_op;
  info.compiled_region = interned.rfind("Torch-Compiled Region", 0) == 0;
  for (const char* backend : {"gloo:", "nccl:", "mpi:", "ucc:", "xccl:"}) {
    info.comm_work |= interned.rfind(backend, 0) == 0;
  }
  auto ends_with = [&](std::string_view tail) {
    return interned.size() >= tail.size() &&
           interned.compare(interned.size() - tail.size(), tail.size(), tail) == 0;
  };
  info.recv = (info.comm_work && ends_with(":recv")) || interned == "c10d::recv_" ||
              interned == "c10d::recv_any_source_";
  info.barrier = (info.comm_work || interned.rfind("c10d::", 0) == 0) &&
                 interned.find("barrier") != std::string::npos;
  return *t.infos.emplace(std::string_view(interned), info).first;
}

std::vector<std::string_view> op_names(const std::vector<uint32_t>& ids) {
  OpNames& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<std::string_view> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) out.push_back(t.names.at(id));
  return out;
}

}  // namespace effmetrics
