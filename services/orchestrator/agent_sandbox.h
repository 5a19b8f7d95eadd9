// agent_sandbox.h — the one sandbox of an agent task (sandbox mode; see agent_tools.h).
//
// Made at the task's first tool call through the sandbox service (common/sandbox_client.h),
// owned by "task:<traceId>", labelled task=<traceId>, with the task's tier and a lifetime of the
// task's time left + 60 s, so that even an orchestrator killed mid-task leaves nothing running
// past that (the executor reaps it: event sandbox.reaped). Destroyed by close() when the task
// ends, on every path (answer, error, cancel, deadline, shutdown).
//
// A sandbox whose VM died (vmFailed) or that the executor no longer knows (unknownSandbox: reaped,
// executor restarted) is forgotten; the next call makes a new one, and the model is told that
// the files and variables of the old one are gone.
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/exec.capnp.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/client.h"
#include "common/error.h"
#include "common/sandbox_client.h"

namespace nv::agent {

class TaskSandbox {
 public:
  struct Options {
    std::string owner;  // "task:<traceId>"
    std::string trace;
    schema::SizeTier tier = schema::SizeTier::UNSET;
    std::chrono::milliseconds lifetime{0};  // 0 = the executor's default
    std::vector<sandbox::Mount> mounts{};   // host directories (SubmitTask.mounts)
    sandbox::Network network{};             // SubmitTask.network (issue 16); mode none default
  };
  TaskSandbox(Client& client, Options options);

  // The sandbox's id, made now when there is none; *created says whether this call made it.
  Result<std::string> ensure(std::chrono::milliseconds budget, bool* created);
  // "" before the first call, and after the sandbox was lost.
  const std::string& id() const { return id_; }
  // Sandboxes made in this task (more than one when one was lost).
  int made() const { return made_; }

  Result<sandbox::ExecResult> exec(const sandbox::ExecSpec& spec,
                                   const sandbox::SandboxClient::ChunkFn& on_chunk,
                                   std::chrono::milliseconds budget);
  Result<sandbox::FileEntry> write(const std::string& path, std::string_view content,
                                   std::chrono::milliseconds budget);
  Result<sandbox::FileData> read(const std::string& path, uint64_t offset, uint64_t length,
                                 std::chrono::milliseconds budget);

  // Copies the read-write mounts out to the host now (sandbox.capnp SandboxRequest.sync).
  // unknownSandbox when there is no sandbox.
  Result<std::vector<sandbox::MountSync>> sync(std::chrono::milliseconds budget);

  // Destroys the sandbox, if one is there. An error says the service could not be told (the
  // sandbox is then reaped at its lifetime's end or idle timeout).
  Status close(std::chrono::milliseconds budget);

  // Whether `e` means the sandbox is gone (its VM died, or the executor does not know it).
  static bool is_lost(const Error& e);

 private:
  // After a call's error: a lost sandbox is forgotten and the message says so.
  Error checked(Error e);

  sandbox::SandboxClient client_;
  Options options_;
  std::string id_;
  int made_ = 0;
};

// The sandbox service's exec result as exec.capnp's ExecResult (what TaskProgress.execResult
// and the tool output take).
void to_capnp(const sandbox::ExecResult& r, const std::string& trace,
              schema::ExecResult::Builder b);

}  // namespace nv::agent
