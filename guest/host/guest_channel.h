// guest_channel.h — the host side of the guest protocol (schemas/guest.capnp).
//
// One GuestChannel is one stream to one guest agent: a QEMU virtio-serial chardev socket
// (ChannelKind::unix_stream) or a Firecracker hybrid-vsock socket (ChannelKind::hybrid_vsock:
// "CONNECT <port>\n" → "OK <n>\n"). Used by nv-vm-pool-manager (connect = wait for Hello,
// reseed) and nv-sandbox-executor (exec, files).
//
// Greeting: the host pings (nonce 0); the agent answers Hello then the pong, and also sends Hello
// by itself whenever it notices a new connection, which can come after the pong. So after the
// greeting a Hello of the same boot id may arrive in any state (exec output, file transfer,
// reseed, ping, shutdown) and is skipped; a Hello of another boot id is a protocol error (the
// guest restarted under us). Late pongs of abandoned pings are skipped the same way.
//
// Trust: the guest runs untrusted code and may be hostile. Every frame length is bounded before
// buffering (max_frame_bytes), everything the guest sends is rate-limited (bytes/s and
// messages/s token buckets), output is capped on the host too, and every call takes a deadline
// it never blocks past (poll() on the fd; no sleeps). Errors are values; nothing throws out of
// this API. After any error except guest_error / bad_argument the channel is closed: the caller
// should destroy the VM rather than reuse a stream in an unknown state.
//
// Not thread-safe: one caller at a time per channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nv/schema/common.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/sandbox.capnp.h>

#include "guest/host/channel_types.h"
#include "guest/protocol/frame.h"  // kMaxChunkBytes, kDefaultGuestFrameCap for callers
#include "services/common/token_bucket.h"

namespace nv::guest {

class GuestChannel {
 public:
  // Connects and waits for the agent's Hello (and the answer to a ping sent at once, so the
  // stream is in step). A socket that does not exist yet is retried until the deadline.
  static Result<std::unique_ptr<GuestChannel>> connect(const std::string& socket_path,
                                                       ChannelKind kind, uint32_t vsock_port,
                                                       Deadline deadline,
                                                       const ChannelLimits& limits = {});
  // connect() and reseed() pipelined: the Reseed request goes out right behind the greeting, so
  // a just-restored guest answers Hello, pong and Reseeded in one wake-up. `identity` (may be
  // null) gets what the agent confirmed.
  static Result<std::unique_ptr<GuestChannel>> connect_and_reseed(
      const std::string& socket_path, ChannelKind kind, uint32_t vsock_port,
      std::string_view entropy, const std::string& vm_id, int64_t unix_time_ns, Deadline deadline,
      Identity* identity, const ChannelLimits& limits = {}, const GuestNetwork* network = nullptr);
  // Takes over a connected stream (tests: a socketpair end) and waits for Hello.
  static Result<std::unique_ptr<GuestChannel>> adopt(int fd, Deadline deadline,
                                                     const ChannelLimits& limits = {});

  ~GuestChannel();
  GuestChannel(const GuestChannel&) = delete;
  GuestChannel& operator=(const GuestChannel&) = delete;

  const HelloInfo& hello() const { return hello_; }
  bool is_open() const { return fd_ >= 0; }
  void close();

  // Runs code; chunks arrive through on_chunk as they come, then the outcome.
  Result<ExecOutcome> exec(const ExecSpec& spec, const ChunkCallback& on_chunk, Deadline deadline);
  // Writes a file in the guest (below /tmp or /home/agent); mode 0 = 0644.
  ChannelError put_file(const std::string& path, std::string_view data, uint32_t mode,
                        Deadline deadline);
  // Reads a file from the guest (at most ~960 KiB: one frame).
  Result<std::string> get_file(const std::string& path, Deadline deadline);
  // Round trip time of one ping.
  Result<std::chrono::nanoseconds> ping(Deadline deadline);
  // Mixes entropy into the guest RNG, sets its clock (unix_time_ns > 0) and identity.
  Result<Identity> reseed(std::string_view entropy, const std::string& vm_id, int64_t unix_time_ns,
                          Deadline deadline);
  // --- Sandbox operations (guest agent 0.2; guest/host/guest_sandbox.cc). A missing path or
  // process is guest_error with guest_code NOT_FOUND; a path outside the agent's writable roots
  // or a bad argument is guest_error with BAD_REQUEST. These do not close the channel.
  //
  // Writes `data` to `path` (sent in frames of at most 4 MiB): replaced atomically (temp file +
  // rename in the guest), or appended. Returns the entry afterwards.
  Result<FileEntryInfo> write_file(const std::string& path, std::string_view data, uint32_t mode,
                                   bool append, Deadline deadline);
  // Reads [offset, offset + length) of `path` (length 0 = to the end, but at most max_bytes:
  // FileRange.eof tells whether the end was reached); a length above max_bytes is bad_argument
  // before anything is sent. Bytes read do not count against the guest's rate limit.
  Result<FileRange> read_file(const std::string& path, uint64_t offset, uint64_t length,
                              uint64_t max_bytes, Deadline deadline);
  Result<FileEntryInfo> stat(const std::string& path, Deadline deadline);
  // A directory's entries (recursive: the whole tree, at most 10,000 entries).
  Result<std::vector<FileEntryInfo>> list_dir(const std::string& path, bool recursive,
                                              Deadline deadline);
  ChannelError remove(const std::string& path, bool recursive, Deadline deadline);
  Result<FileEntryInfo> make_dir(const std::string& path, bool parents, Deadline deadline);
  Result<std::vector<ProcessEntry>> processes(Deadline deadline);
  ChannelError signal(int32_t pid, int32_t signo, Deadline deadline);
  // Kills the named context's interpreter; the next exec with that name starts a fresh one.
  ChannelError reset_context(const std::string& name, schema::Language language, Deadline deadline);
  // Host directories (guest.capnp MountSetup): an empty tmpfs of size_bytes / inodes at `path`
  // (strictly below /home/agent, owned by the run user); mount_seal remounts it read-only.
  ChannelError mount_setup(const std::string& path, uint64_t size_bytes, uint64_t inodes,
                           Deadline deadline);
  ChannelError mount_seal(const std::string& path, Deadline deadline);
  // Starts the agent's inference listener on the guest's 127.0.0.1:11434 (guest.capnp
  // startInference); the host must serve the VM's nv.inference port (sandbox-executor
  // inference_bridge.h). A second call keeps the running listener.
  ChannelError start_inference(Deadline deadline);
  // Ends that listener (guest.capnp stopInference); acked also when none runs.
  ChannelError stop_inference(Deadline deadline);

  // Asks the agent to power off and waits for the stream to close (the VMM exiting).
  ChannelError shutdown(Deadline deadline);

  // Counters for metrics and tests.
  uint64_t bytes_received() const { return bytes_received_; }
  uint64_t frames_received() const { return frames_received_; }
  // Hellos of the greeted boot that arrived after the greeting (legal repeats, skipped).
  uint64_t repeated_hellos() const;

 private:
  friend class ChannelIo;
  struct Impl;
  GuestChannel(int fd, const ChannelLimits& limits);
  // The connected socket (after the hybrid-vsock handshake), retried until the deadline.
  static Result<int> open_stream(const std::string& path, ChannelKind kind, uint32_t port,
                                 Deadline deadline, const ChannelLimits& limits);
  // Takes over a connected stream: the greeting, then `pipelined` (more requests sent before any
  // answer; may be empty), then waits for Hello and the greeting's pong.
  static Result<std::unique_ptr<GuestChannel>> greet(
      int fd, std::chrono::steady_clock::time_point start, Deadline deadline,
      const ChannelLimits& limits, const std::function<ChannelError(GuestChannel&)>& pipelined);
  ChannelError send_greeting(Deadline deadline);
  ChannelError wait_hello(Deadline deadline);
  ChannelError send_reseed(std::string_view entropy, const std::string& vm_id, int64_t unix_time_ns,
                           Deadline deadline, const GuestNetwork* network = nullptr);
  Result<Identity> await_reseeded(const std::string& vm_id, Deadline deadline);
  // Transport of the sandbox calls (guest_sandbox.cc): one request out, then every answer but
  // pongs goes to `on_answer` until it returns true (done) or sets `error`. A guest Error answer
  // ends the wait as guest_error with its code; a malformed answer or a fatal `error` closes
  // the channel.
  using AnswerFn = std::function<bool(ParsedMessage& answer, ChannelError& error)>;
  ChannelError send_request(capnp::MessageBuilder& request, Deadline deadline);
  ChannelError await_answers(const AnswerFn& on_answer, Deadline deadline);
  // Bytes the host asked for (file reads) do not count against the guest's rate limit.
  void credit_solicited_bytes(uint64_t n);
  // The sandbox calls' shared steps (guest_sandbox.cc): a fileOp request (`kind`: a
  // schema::FileOpKind); waiting for an ack (its entry, if any) or an entries answer.
  ChannelError send_file_op(uint16_t kind, const std::string& path, bool recursive,
                            Deadline deadline);
  Result<FileEntryInfo> await_ack(const char* what, Deadline deadline);
  Result<std::vector<FileEntryInfo>> await_entries(Deadline deadline);
  // The fileData answer to putFile / getFile (`verb`: "write" / "read", for the message).
  Result<std::string> await_file_data(const char* verb, const std::string& path, Deadline deadline);

  int fd_ = -1;
  ChannelLimits limits_;
  HelloInfo hello_;
  std::unique_ptr<Impl> impl_;
  uint64_t bytes_received_ = 0;
  uint64_t frames_received_ = 0;
  uint64_t next_nonce_ = 1;
};

}  // namespace nv::guest
