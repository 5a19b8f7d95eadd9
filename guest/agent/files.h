// files.h — the agent's sandbox file operations (guest.capnp writeChunk, readRange, fileOp).
//
// Paths are absolute and "clean" (no empty, "." or ".." parts). Writes, removes and mkdirs are
// allowed only strictly below a writable root (/tmp, /home/agent); stat, list and reads anywhere.
// Paths are walked one component at a time with O_NOFOLLOW | O_DIRECTORY from the root, so no
// symlink is ever followed: not in the middle (a link placed by a program cannot redirect the
// root-privileged agent elsewhere), and not at the final component (a write or append to a
// symlink is refused; stat and list report the link itself, lstat-style). Everything created is
// owned by the run user. Errors: NOT_FOUND for ENOENT, BAD_REQUEST with the errno text else.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <capnp/message.h>
#include <nv/schema/guest.capnp.h>

namespace nv::guest::agent {

struct AgentConfig;

// Absolute, at most 4096 bytes, no NUL, no empty/"."/".." parts: what the agent accepts as a path.
bool path_is_clean(const std::string& path);
// The writable root `path` lies strictly below ("" if none).
std::string writable_root_of(const AgentConfig& config, const std::string& path);
// The directory that holds `path` (strictly below a writable root), walked from the root one
// component at a time without following any symlink, missing parents made (owned by the run
// user). Returns its fd and the last component in `leaf`, or -1 with `error` (errno in `err`).
int open_parent_for_write(const AgentConfig& config, const std::string& path, std::string& leaf,
                          std::string& error, int& err);

class FileOps {
 public:
  using SendFn = std::function<void(capnp::MessageBuilder&)>;
  using ErrorFn = std::function<void(uint16_t code, const std::string& message)>;

  // Data per fileChunk answer (a guest frame is at most 1 MiB on the host).
  static constexpr uint64_t kReadChunkBytes = 512u << 10;
  // Entries of one recursive list at most; more is BAD_REQUEST.
  static constexpr size_t kMaxListEntries = 10000;
  // An `entries` answer must fit one guest frame (the host caps frames at 1 MiB).
  static constexpr size_t kMaxAnswerBytes = 1000u << 10;

  FileOps(const AgentConfig& config, SendFn send, ErrorFn error);
  ~FileOps();
  FileOps(const FileOps&) = delete;
  FileOps& operator=(const FileOps&) = delete;

  // One chunk of a write: `first` opens (a temp file next to the path, or the path itself with
  // append), `last` fsyncs and renames over the path (or closes it) and answers ack with the
  // entry. An error at any chunk is answered once; the write's later chunks are then ignored
  // until its `last` chunk or the next `first`.
  void write_chunk(schema::FileWriteChunk::Reader chunk);
  // Answers fileChunk frames of at most kReadChunkBytes, the last with done set.
  void read_range(schema::FileReadRange::Reader range);
  // stat, list → entries; remove, mkdir → ack.
  void file_op(schema::FileOp::Reader op);
  // Abandons a write in progress (its temp file is removed): the host went away.
  void abort_write();

 private:
  struct Write;
  void fail_write(uint16_t code, const std::string& message);

  const AgentConfig& config_;
  SendFn send_;
  ErrorFn error_;
  Write* write_ = nullptr;   // the write in progress
  std::string failed_path_;  // a write that failed: its chunks are ignored until `last`
};

}  // namespace nv::guest::agent
