// qmp.h — a small client for the QEMU Machine Protocol over a Unix socket.
//
// Protocol (QEMU docs/interop/qmp-spec): the server greets with {"QMP": {...}}; the client must
// send {"execute": "qmp_capabilities"} before anything else; every command gets either
// {"return": ...} or {"error": {"class", "desc"}}; asynchronous {"event": ...} lines may arrive
// at any time. Commands carry an "id" that QEMU echoes, so replies are matched, and events seen
// meanwhile are kept for wait_event(). File descriptors travel with SCM_RIGHTS alongside a
// "getfd" command (used for migration to/from files while QEMU's -sandbox forbids spawning).
#pragma once

#include <deque>
#include <string>
#include <string_view>

#include "backend.h"
#include "sysutil.h"

namespace nv::vm {

class QmpClient {
 public:
  QmpClient() = default;
  QmpClient(QmpClient&&) = default;
  QmpClient& operator=(QmpClient&&) = default;

  // Connects (retrying while the socket does not exist yet), reads the greeting and negotiates
  // capabilities. `exit_fd` (the VMM's pidfd, or -1) aborts early when the VMM dies meanwhile.
  static Result<QmpClient> connect(const std::string& path, Deadline deadline, int exit_fd = -1);

  // Runs a command; `args_json` is a JSON object text or "" for none. Returns the "return"
  // member as JSON text, or a typed error carrying QEMU's error class and description.
  Result<std::string> execute(std::string_view command, std::string_view args_json,
                              Deadline deadline);
  // "getfd" with `fd` attached via SCM_RIGHTS; QEMU then knows it as `name` ("fd:name").
  Status send_fd(std::string_view name, int fd, Deadline deadline);
  // "add-fd" with `fd` attached: QEMU puts it in a new fd set and answers its id; commands that
  // take a file name then open it as "/dev/fdset/<id>" (the access mode must match `fd`'s).
  // Remove the set with execute("remove-fd", {"fdset-id": id}).
  Result<int64_t> add_fd(int fd, Deadline deadline);
  // Waits for an event by name (already received ones count); returns its JSON text.
  Result<std::string> wait_event(std::string_view name, Deadline deadline);
  // The "status" of query-status ("running", "paused", "inmigrate", "postmigrate", ...).
  Result<std::string> run_state(Deadline deadline);
  // Polls query-migrate until "completed" (or "failed"/deadline).
  Status wait_migration(Deadline deadline);

  bool connected() const { return fd_.valid(); }
  void close() { fd_.reset(); }

 private:
  Result<std::string> read_line(Deadline deadline);
  Status send_raw(const std::string& text, int fd_to_pass, Deadline deadline);
  Result<std::string> command(const std::string& text_without_id, std::string_view command,
                              int fd_to_pass, Deadline deadline);

  UniqueFd fd_;
  std::string buf_;
  std::deque<std::string> events_;
  uint64_t next_id_ = 1;
};

}  // namespace nv::vm
