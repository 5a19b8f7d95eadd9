// sandbox_route.h — where a sandbox's calls go on the bus (schemas/sandbox.capnp, "Routing").
//
// Every executor registers "sandbox" (create, list, snapshots, deleteSnapshot) and
// "sandbox.<executor>". A sandbox id is "sbx-<executor>-<random>": <executor> is the name of the
// executor that made it (1..40 bytes [a-zA-Z0-9_], no '-' and no '.', so the id splits
// unambiguously) and <random> is 16 lowercase hex digits. Every call on an existing sandbox goes
// to "sandbox.<executor>", so the executor that holds its VM serves it.
#pragma once

#include <string>
#include <string_view>

namespace nv {

inline constexpr std::string_view kSandboxService = "sandbox";
inline constexpr size_t kMaxExecutorNameBytes = 40;
inline constexpr size_t kSandboxRandomHexDigits = 16;

// Whether `name` may name an executor in sandbox ids: 1..40 bytes of [a-zA-Z0-9_].
inline bool valid_executor_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxExecutorNameBytes) return false;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

// The executor part of a well-formed id ("sbx-host1-0123456789abcdef" → "host1"); "" when `id`
// is not of the form "sbx-<executor>-<16 hex digits>".
inline std::string sandbox_executor_of(std::string_view id) {
  constexpr std::string_view prefix = "sbx-";
  if (id.size() <= prefix.size() + 1 + kSandboxRandomHexDigits) return {};
  if (id.substr(0, prefix.size()) != prefix) return {};
  auto dash = id.size() - kSandboxRandomHexDigits - 1;
  if (id[dash] != '-') return {};
  for (char c : id.substr(dash + 1)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return {};
  }
  auto executor = id.substr(prefix.size(), dash - prefix.size());
  if (!valid_executor_name(executor)) return {};
  return std::string(executor);
}

// The bus service that serves sandbox `id`: "sandbox.<executor>"; plain "sandbox" for an id that
// is not well formed (any executor then answers it: unknownSandbox).
inline std::string sandbox_service_for(std::string_view id) {
  auto executor = sandbox_executor_of(id);
  if (executor.empty()) return std::string(kSandboxService);
  return std::string(kSandboxService) + "." + executor;
}

}  // namespace nv
