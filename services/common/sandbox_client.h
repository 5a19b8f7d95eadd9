// sandbox_client.h — a typed client of the "sandbox" bus service (schemas/sandbox.capnp) over
// nv::Client: one method per SandboxRequest operation, plain C++ structs in and out, typed errors
// (nv::Error with the common.capnp code) on failure.
//
// Routing is done here (sandbox_route.h): create, list, snapshots and deleteSnapshot go to
// "sandbox"; every call on an existing sandbox goes to "sandbox.<executor>" of its id.
//
// Errors every call may return: the bus's own (noWorker, timedOut, brokerLost, cancelled,
// unknownService, malformedMessage for an answer that does not parse) and the service's:
//   badRequest       a field out of range (names 1..63 bytes [a-zA-Z0-9._-], labels ≤ 16, files
//                    ≤ 32 MiB per request, paths absolute under /home/agent or /tmp, ...)
//   unknownSandbox   no such sandbox for this owner (another owner's id answers the same)
//   unknownSnapshot  no such snapshot for this owner
//   sandboxLimit     the owner's live sandboxes or memory would pass the executor's limit
//   sandboxState     the operation does not fit the state (e.g. exec on a paused sandbox)
//   notFound         a file, directory or process inside the sandbox does not exist
//   vmFailed         the sandbox's VM died (the sandbox is reaped "vm lost: ...")
//   guestProtocol    the guest agent broke the protocol
// Not thread-safe (nv::Client is not): one SandboxClient per thread.
#pragma once

#include <nv/schema/sandbox.capnp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "client.h"
#include "error.h"

namespace nv::sandbox {

using EnvList = std::vector<std::pair<std::string, std::string>>;  // name, value

struct Label {
  std::string key;    // 1..63 bytes [a-zA-Z0-9._-]
  std::string value;  // at most 255 bytes
  bool operator==(const Label&) const = default;
};

// sandbox.capnp Mount: a host directory copied into the sandbox at creation (issue 15).
struct Mount {
  std::string host_path{};   // absolute host directory under one of the executor's --mount-root
  std::string guest_path{};  // absolute, strictly below /home/agent
  bool read_only = false;
  uint64_t quota_bytes = 0;  // 0 = the executor's --mount-quota-bytes
  uint32_t quota_files = 0;  // 0 = the executor's --mount-quota-files
  bool operator==(const Mount&) const = default;
};

// sandbox.capnp MountSync: what one `sync` of a read-write mount did on the host.
struct MountSync {
  std::string guest_path, host_path;
  uint32_t files_written = 0;
  uint64_t bytes_written = 0;
  uint32_t files_removed = 0;
  std::vector<std::string> skipped;  // "<path>: <why>", at most 100
};

// sandbox.capnp InferencePolicy: the in-guest model endpoint (issue 16).
struct Inference {
  bool enabled = false;
  std::vector<std::string> models{};  // allowed model names; empty = the gateway's default only
  uint64_t token_budget = 0;          // prompt + completion tokens; 0 = the executor's default
};

// sandbox.capnp NetworkPolicy (in a Spec) and NetworkInfo (in an Info), issue 16.
struct Network {
  bool allow = false;                // false: mode none (no route)
  std::vector<std::string> entries;  // CIDR[:port] and domain names
  uint32_t max_connections = 0;      // Spec: 0 = the pool's default
  uint64_t bandwidth = 0;            // Spec: egress bytes/s, 0 = the pool's default
  std::string mac, ipv4, gateway;    // Info: the VM's, "" for mode none
};

// sandbox.capnp SandboxSpec. Every member has a default (designated initializers may name only
// what they set).
struct Spec {
  schema::SizeTier tier = schema::SizeTier::UNSET;  // unset = small
  std::string image{};                              // "" | "default"
  EnvList env{};                                    // every exec starts with these
  std::string cwd{};                                // "" = /home/agent
  uint32_t lifetime_ms = 0;                         // 0 = the executor's default (1 h)
  uint32_t idle_timeout_ms = 0;                     // 0 = the executor's default (10 min)
  std::vector<Label> labels{};                      // at most 16
  std::string from_snapshot{};                      // "" = a fresh warm VM
  std::vector<Mount> mounts{};                      // at most 8
  Inference inference{};                            // off unless enabled
  Network network{};                                // mode none unless set
};

// sandbox.capnp SandboxInfo. Times are unix milliseconds.
struct Info {
  std::string sandbox_id, owner;
  schema::SandboxState state = schema::SandboxState::UNSET;
  schema::SizeTier tier = schema::SizeTier::UNSET;
  uint32_t vcpus = 0, memory_mib = 0;
  std::string vm_id;  // "" while paused
  int64_t created_unix_ms = 0, deadline_unix_ms = 0, idle_deadline_unix_ms = 0;
  int64_t last_active_unix_ms = 0;
  std::vector<Label> labels;
  std::string parent_id, from_snapshot, cwd;
  EnvList env;
  std::string end_reason;  // destroyed: why
  std::vector<Mount> mounts;
  Inference inference;  // token_budget: the one in force (the default filled in)
  uint64_t inference_tokens_used = 0;
  Network network;  // the VM's network (mode, allow list, MAC, address, gateway)
};

// sandbox.capnp SandboxExec.
struct ExecSpec {
  schema::Language language = schema::Language::UNSET;  // unset = bash
  std::string code{};
  std::string stdin_data{};
  EnvList env{};                  // on top of the sandbox's env
  std::string cwd{};              // "" = the sandbox's cwd
  uint32_t timeout_ms = 0;        // 0 = the executor's default
  uint32_t output_cap_bytes = 0;  // 0 = the executor's default
  uint32_t tail_bytes = 0;
  std::string context{};    // "" = a new process; else a persistent python/javascript interpreter
  bool background = false;  // answer at once (exit code -1); the program keeps running
};

// exec.capnp ExecResult (files are never asked for by a sandbox exec).
struct ExecResult {
  int32_t exit_code = -1, signal = 0;
  double duration_ms = 0, wall_ms = 0;
  bool timed_out = false, truncated = false, host_killed = false;
  std::string stdout_data, stderr_data, stdout_tail, stderr_tail;
  uint64_t stdout_bytes = 0, stderr_bytes = 0;
  std::string vm_id, note;
};

// sandbox.capnp FileEntry.
struct FileEntry {
  std::string path;
  schema::FileType type = schema::FileType::UNSET;
  uint64_t size = 0;  // bytes
  uint32_t mode = 0;  // st_mode & 07777
  int64_t mtime_unix_ms = 0;
  std::string link_target;
};

// sandbox.capnp FileReadReply.
struct FileData {
  std::string path;
  uint64_t offset = 0;
  std::string data;
  uint64_t size = 0;  // the whole file
  bool eof = false;
};

// sandbox.capnp ProcessInfo.
struct Process {
  int32_t pid = 0, ppid = 0;
  std::string command, state;
  uint64_t rss_bytes = 0;
  int64_t started_unix_ms = 0;
  std::string context;
};

// sandbox.capnp SnapshotInfo.
struct Snapshot {
  std::string name, owner;
  schema::SizeTier tier = schema::SizeTier::UNSET;
  std::string source_sandbox_id;
  int64_t created_unix_ms = 0;
  uint64_t memory_bytes = 0, state_bytes = 0;
};

// Conversions to and from the schema (shared with the service, which builds these replies).
void to_capnp(const Spec& s, schema::SandboxSpec::Builder b);
Spec from_capnp(schema::SandboxSpec::Reader r);
void to_capnp(const Info& s, schema::SandboxInfo::Builder b);
Info from_capnp(schema::SandboxInfo::Reader r);
void to_capnp(const ExecSpec& s, schema::SandboxExec::Builder b);
ExecSpec from_capnp(schema::SandboxExec::Reader r);
ExecResult from_capnp(schema::ExecResult::Reader r);
void to_capnp(const FileEntry& s, schema::FileEntry::Builder b);
FileEntry from_capnp(schema::FileEntry::Reader r);
void to_capnp(const Process& s, schema::ProcessInfo::Builder b);
Process from_capnp(schema::ProcessInfo::Reader r);
void to_capnp(const Snapshot& s, schema::SnapshotInfo::Builder b);
Snapshot from_capnp(schema::SnapshotInfo::Reader r);
void to_capnp(const MountSync& s, schema::MountSync::Builder b);
MountSync from_capnp(schema::MountSync::Reader r);
void mounts_to_capnp(const std::vector<Mount>& mounts, capnp::List<schema::Mount>::Builder b);
std::vector<Mount> mounts_from_capnp(capnp::List<schema::Mount>::Reader r);
void labels_to_capnp(const std::vector<Label>& labels, capnp::List<schema::Label>::Builder b);
std::vector<Label> labels_from_capnp(capnp::List<schema::Label>::Reader r);
EnvList env_from_capnp(capnp::List<schema::EnvVar>::Reader r);
void env_to_capnp(const EnvList& env, capnp::List<schema::EnvVar>::Builder b);

struct ClientCallOptions {
  std::chrono::milliseconds timeout{60000};  // the bus deadline of each call
  std::string trace_id;                      // "" = none
};

class SandboxClient {
 public:
  // `owner` is sent with every request ("uid:<n>", "tenant:<id>"); 1..128 bytes.
  SandboxClient(Client& client, std::string owner, ClientCallOptions options = {});

  void set_timeout(std::chrono::milliseconds t) { options_.timeout = t; }
  void set_trace_id(std::string t) { options_.trace_id = std::move(t); }
  const std::string& owner() const { return owner_; }

  // A new sandbox (state running). sandboxLimit, unknownSnapshot (fromSnapshot), poolExhausted.
  Result<Info> create(const Spec& spec);
  Result<Info> get(const std::string& id);
  // The owner's sandboxes carrying all `labels` (+ those destroyed in the last 10 minutes).
  Result<std::vector<Info>> list(const std::vector<Label>& labels = {},
                                 bool include_destroyed = false);
  // Runs code; `on_chunk` gets each ExecChunk partial (stream status "started", stdout, stderr)
  // as it arrives, then the result returns.
  using ChunkFn = std::function<void(schema::Stream stream, std::string_view data)>;
  Result<ExecResult> exec(const std::string& id, const ExecSpec& spec,
                          const ChunkFn& on_chunk = {});
  Status restart_context(const std::string& id, const std::string& context,
                         schema::Language language);
  // Writes at most 32 MiB, and no more than fits one bus frame (--max-frame-bytes, 8 MiB by
  // default; larger: the broker answers oversizedFrame) — append larger files in pieces. mode
  // 0 = 0644. Returns the entry afterwards.
  Result<FileEntry> write_file(const std::string& id, const std::string& path,
                               std::string_view data, uint32_t mode = 0, bool append = false);
  // [offset, offset + length) of a file; length 0 = to the end. At most the executor's file cap
  // per call (32 MiB, lowered to fit its bus frame): page with offset until `eof`.
  Result<FileData> read_file(const std::string& id, const std::string& path, uint64_t offset = 0,
                             uint64_t length = 0);
  Result<std::vector<FileEntry>> list_files(const std::string& id, const std::string& path,
                                            bool recursive = false);
  Result<FileEntry> stat_file(const std::string& id, const std::string& path);
  Status remove_file(const std::string& id, const std::string& path, bool recursive = false);
  Result<FileEntry> make_dir(const std::string& id, const std::string& path, bool parents = false);
  Result<std::vector<Process>> processes(const std::string& id);
  Status signal(const std::string& id, int32_t pid, int32_t signo);
  // Touches the sandbox (resets its idle deadline); extend_ms > 0 also moves its lifetime's end.
  Result<Info> keepalive(const std::string& id, uint32_t extend_ms = 0);
  Result<Snapshot> snapshot(const std::string& id, const std::string& name);
  Result<std::vector<Snapshot>> snapshots();
  Status delete_snapshot(const std::string& name);
  // `count` (1..16) new running sandboxes from a running one.
  Result<std::vector<Info>> fork(const std::string& id, uint32_t count,
                                 const std::vector<Label>& labels = {});
  Result<Info> pause(const std::string& id);
  Result<Info> resume(const std::string& id);
  Result<Info> destroy(const std::string& id);
  // Copies the read-write mounts out to the host now (one MountSync per read-write mount).
  // Errors: mountQuota (a mount holds more than its quota: nothing of it was written).
  Result<std::vector<MountSync>> sync(const std::string& id);

 private:
  capnp::MallocMessageBuilder& begin(const std::string& id);
  schema::SandboxRequest::Builder request();
  Result<Client::Incoming> send(const std::string& service, const ChunkFn& on_chunk = {});
  Result<Client::Incoming> on_sandbox(const std::string& id, const ChunkFn& on_chunk = {});

  Client& client_;
  std::string owner_;
  ClientCallOptions options_;
  std::unique_ptr<capnp::MallocMessageBuilder> mb_;
};

}  // namespace nv::sandbox
