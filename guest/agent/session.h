// session.h — the agent's side of one host connection: frames in, requests served, frames out.
//
// Transport-free: the owner feeds received bytes and supplies a write function, so the same code
// serves the virtio-serial port, AF_VSOCK connections and, in unit tests, a socketpair on the
// build host. Everything the agent does to the system (entropy, hostname, clock, power) goes
// through SystemOps, which tests replace with a fake.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nv/schema/guest.capnp.h>

#include "guest/agent/contexts.h"
#include "guest/agent/exec_core.h"
#include "guest/agent/files.h"
#include "guest/agent/processes.h"
#include "guest/protocol/frame.h"

namespace nv::guest::agent {

inline constexpr const char* kAgentVersion = "nv-guest-agent 0.2.0";

// What the agent does to the machine on the host's behalf. Each call returns "" on success or
// the failing call with its errno text.
class SystemOps {
 public:
  virtual ~SystemOps() = default;
  virtual std::string add_entropy(std::string_view bytes) = 0;     // RNDADDENTROPY
  virtual std::string set_clock(int64_t unix_time_ns) = 0;         // clock_settime(REALTIME)
  virtual std::string set_identity(const std::string& vm_id) = 0;  // hostname, /run/nv/vm-id
  virtual std::string boot_id() = 0;
  virtual uint64_t uptime_ms() = 0;
  // eth0: MAC "02:..", address "10.213.0.2/30", default route and resolver `gateway`; "" = done,
  // else the error (Reseed.network, issue 16).
  virtual std::string configure_network(const std::string& /*mac*/, const std::string& /*ipv4*/,
                                        const std::string& /*gateway*/) {
    return "networking not supported";
  }
};

// An interpreter the agent can run; `language` is nv::schema::Language as an integer.
struct LanguageRule {
  uint16_t language;
  std::string program;             // absolute path
  std::vector<std::string> flags;  // put between the program and the code ("-c", "-e")
};

struct AgentConfig {
  std::vector<LanguageRule> languages;  // see default_languages()
  int run_uid = -1;  // programs run as this uid/gid when >= 0 (the image's `nv` user: 1000)
  int run_gid = -1;
  uint32_t max_host_frame = kDefaultHostFrameCap;
  // GetFile answers must fit in one guest frame (the host caps them at 1 MiB).
  uint64_t max_get_file_bytes = 960u * 1024;
  uint32_t default_timeout_ms = 10000;
  uint32_t max_timeout_ms = 15u * 60 * 1000;
  uint32_t default_output_cap = 1u << 20;
  uint32_t max_output_cap = 64u << 20;
  // The run user's home: a tmpfs the agent mounts at boot (system.cc), owned by the run user.
  std::string default_cwd = "/home/agent";
  // PutFile, writeChunk, remove and mkdir only below these directories (absolute, no trailing
  // slash).
  std::vector<std::string> writable_roots = {"/tmp", "/home/agent"};
  // The environment every program starts with; the request's variables replace these (each
  // name appears once, see merge_env), NEUROVISOR_TRACE_ID last.
  std::vector<std::string> base_env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/home/agent",
      "LANG=C.UTF-8",
      "PYTHONDONTWRITEBYTECODE=1",  // the root filesystem is read-only
      "PYTHONUNBUFFERED=1",         // output streams as it is produced
  };
  std::vector<RlimitRule> rlimits = default_rlimits();
  // oom_score_adj for programs (unset: inherit the agent's).
  std::optional<int> program_oom_score_adj;
  // PID 1: collect exited orphans before listing processes (so a killed one is gone, not a
  // zombie). Off in tests, where the agent is not the reaper.
  bool reap_before_listing = false;
  // startInference (guest.capnp): starts the 127.0.0.1:11434 listener (inference_bridge.h);
  // returns "" or why it could not. Empty = this agent has none (the request is refused).
  std::function<std::string()> start_inference;
  std::function<void()> stop_inference;  // stopInference: ends it (none running: nothing)
};

// A program's environment: `base` ("NAME=value" entries), then each of `set` in order; a name
// already present is replaced in place (the caller's value wins over the guest default, a later
// entry over an earlier one), so every name appears exactly once (getenv() in C, os.environ in
// Python and process.env in Node may otherwise see different values of a doubled name).
std::vector<std::string> merge_env(const std::vector<std::string>& base,
                                   const std::vector<std::pair<std::string, std::string>>& set);

// python, bash, sh, javascript at their Debian paths (common.capnp: Language).
std::vector<LanguageRule> default_languages();

class Session {
 public:
  // `write` sends bytes to the host and returns false once the connection is unusable.
  using WriteFn = std::function<bool(std::string_view)>;

  Session(const AgentConfig& config, SystemOps& ops, WriteFn write);

  // A host connected: forget any partial input and greet it with Hello.
  void on_connect();
  // Bytes from the host. Returns false when the stream must be dropped (a length the agent will
  // not buffer); the host has been told why.
  bool on_bytes(const char* data, size_t n);
  // The host asked to power off; the owner does it after the answer is flushed.
  bool shutdown_requested() const { return shutdown_; }

 private:
  void dispatch(kj::Array<capnp::word> words);
  void send_hello();
  void send_error(uint16_t code, const std::string& message);
  void send(capnp::MessageBuilder& message);
  void handle_exec(schema::GuestExec::Reader exec);
  void handle_put(schema::FilePut::Reader put);
  void handle_get(const std::string& path);
  void handle_reseed(schema::Reseed::Reader reseed);
  void handle_processes();
  void handle_signal(schema::SignalRequest::Reader req);
  void handle_reset(schema::ContextReset::Reader req);
  void send_ack(const char* what);
  // Whether `p` is a sandbox process: the run user's (uid >= 0), else in a session the agent
  // started (tests); never the agent itself.
  bool is_sandbox_process(const ProcessRecord& p) const;

  const AgentConfig& config_;
  SystemOps& ops_;
  WriteFn write_;
  FrameDecoder decoder_;
  FileOps files_;
  Contexts contexts_;
  std::set<int> sessions_;  // sessions of programs the agent started (pid of their leader)
  bool hello_sent_ = false;
  bool write_ok_ = true;
  bool shutdown_ = false;
};

}  // namespace nv::guest::agent
