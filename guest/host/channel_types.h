// channel_types.h — the values of the guest channel's API (guest_channel.h): channel kinds,
// typed errors and results, limits, and what exec, files, processes and reseed take and give.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nv/schema/common.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/sandbox.capnp.h>

#include "guest/protocol/frame.h"

namespace nv::guest {

using Deadline = std::chrono::steady_clock::time_point;

enum class ChannelKind {
  unix_stream,   // QEMU: virtio-serial port behind `-chardev socket,path=...,server=on`
  hybrid_vsock,  // Firecracker: vsock uds_path; the host writes "CONNECT <port>\n" first
};

enum class ChannelErrc {
  ok = 0,
  timeout,         // the deadline passed; the guest may be slow (TCG) or hung
  closed,          // the stream ended (VM gone, or a previous error closed the channel)
  connect_failed,  // socket/connect failed, or the hybrid-vsock handshake was refused
  protocol,        // the guest broke the protocol: bad length, malformed message, wrong reply
  rate_limited,    // the guest sent more bytes or messages per second than allowed
  output_cap,      // the guest sent more output than the host-side cap allows
  guest_error,     // the agent answered with an error (bad request, file not found, ...)
  bad_argument,    // the caller passed something the protocol cannot carry
  io,              // a syscall on the socket failed (see message)
};

const char* to_string(ChannelErrc c);

struct ChannelError {
  ChannelErrc code = ChannelErrc::ok;
  std::string message;  // what happened and what to do, for logs and users
  // guest_error: the common.capnp Error.Code the agent answered with (e.g. NOT_FOUND for a
  // missing file, BAD_REQUEST for a path outside the writable roots); UNSET otherwise.
  schema::Error::Code guest_code = schema::Error::Code::UNSET;

  bool ok() const { return code == ChannelErrc::ok; }
  explicit operator bool() const { return !ok(); }  // true when there is an error
};

// A value or an error.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}             // NOLINT: implicit on purpose
  Result(ChannelError error) : error_(std::move(error)) {}  // NOLINT
  bool ok() const { return value_.has_value(); }
  const ChannelError& error() const { return error_; }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T* operator->() { return &*value_; }
  T& operator*() { return *value_; }

 private:
  std::optional<T> value_;
  ChannelError error_;
};

struct ChannelLimits {
  uint32_t max_frame_bytes = 1u << 20;    // one guest frame, header excluded
  double bytes_per_s = 32.0 * (1 << 20);  // sustained guest → host bytes
  double burst_bytes = 64.0 * (1 << 20);
  double messages_per_s = 2000;  // sustained guest → host frames
  double burst_messages = 4000;
  uint64_t max_output_bytes = 64u << 20;        // host-side cap on one exec's stdout+stderr
  std::chrono::milliseconds connect_retry{20};  // first retry interval while the socket is absent
};

struct HelloInfo {
  std::string agent_version;
  std::vector<schema::Language> languages;
  std::string boot_id;
  uint64_t uptime_ms = 0;
  std::chrono::nanoseconds connect_to_hello{0};  // measured by the host
};

struct ExecSpec {
  uint32_t id = 1;  // echoed in chunks and the result
  schema::Language language = schema::Language::UNSET;
  std::string code;
  std::string stdin_data;
  std::vector<std::pair<std::string, std::string>> env;
  uint32_t timeout_ms = 0;        // 0 = the agent's default (10 s)
  uint32_t output_cap_bytes = 0;  // 0 = the agent's default (1 MiB)
  std::string trace_id;           // NEUROVISOR_TRACE_ID
  std::string cwd;                // "" = /home/agent (agent 0.2)
  uint32_t tail_bytes = 0;        // per stream, kept past the cap; 0 = 64 KiB, max 256 KiB
  // Sandboxes (GuestExec.context / keepBackground / background in guest.capnp):
  std::string context;           // "" = a new process; else the named persistent interpreter
  bool keep_background = false;  // processes the program leaves behind keep running
  bool background = false;       // answer right after the start; the program runs on
};

// One file system entry inside the guest (sandbox.capnp FileEntry).
struct FileEntryInfo {
  std::string path;  // absolute
  schema::FileType type = schema::FileType::UNSET;
  uint64_t size = 0;  // bytes
  uint32_t mode = 0;  // st_mode & 07777
  int64_t mtime_unix_ms = 0;
  std::string link_target;  // symlinks: where it points (not followed)
};

// A byte range of a guest file (sandbox.capnp FileReadReply).
struct FileRange {
  std::string data;
  uint64_t offset = 0;  // of data's first byte
  uint64_t size = 0;    // the whole file's size
  bool eof = false;     // offset + data.size() == size
};

// One guest process (sandbox.capnp ProcessInfo).
struct ProcessEntry {
  int32_t pid = 0, ppid = 0;
  std::string command;  // cmdline, NULs as spaces
  std::string state;    // R S D Z T ...
  uint64_t rss_bytes = 0;
  int64_t started_unix_ms = 0;
  std::string context;  // the code context it serves, "" if none
};

struct ExecOutcome {
  int32_t exit_code = -1;
  int32_t signal = 0;
  double duration_ms = 0;  // measured by the agent
  bool timed_out = false;
  bool truncated = false;     // by the agent's cap or the host's
  uint64_t stdout_bytes = 0;  // written by the program in all (the agent counts)
  uint64_t stderr_bytes = 0;
  uint64_t received_bytes = 0;  // chunk bytes that reached the host
  // The end of each stream past the head (GuestResult.stdoutTail/stderrTail), at most
  // tail_bytes each; what the host's own cap dropped of the chunks is not in here.
  std::string stdout_tail, stderr_tail;
  std::string error;  // the agent could not start the program
};

// stream is schema::Stream::STDOUT or STDERR; data is at most 64 KiB.
using ChunkCallback = std::function<void(schema::Stream stream, std::string_view data)>;

struct Identity {
  std::string vm_id;
  std::string boot_id;
};

// eth0 of a networked VM (guest.capnp GuestNetwork), sent with a Reseed.
struct GuestNetwork {
  std::string mac;      // "02:xx:xx:xx:xx:xx"
  std::string ipv4;     // "10.213.0.2/30"
  std::string gateway;  // "10.213.0.1": default route and resolver
};

}  // namespace nv::guest
