// processes.h — the guest's processes as /proc shows them (guest.capnp listProcesses, signal).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nv::guest::agent {

// One process, from /proc/<pid>/stat, status and cmdline (proc(5)).
struct ProcessRecord {
  int pid = 0, ppid = 0;
  int pgid = 0, sid = 0;  // process group and session
  int uid = -1;           // real uid (status "Uid:" first field)
  std::string command;    // cmdline with NULs as spaces, at most 4 KiB; "[comm]" when empty
  std::string state;      // R S D Z T t X I ...
  uint64_t rss_bytes = 0;
  int64_t started_unix_ms = 0;
  bool kernel_thread = false;  // no user memory (kthreadd's children and kthreadd itself)
};

// Reads one process; false when it does not exist (or vanished while being read).
bool read_process(int pid, ProcessRecord& out);
// Every process in /proc, by ascending pid.
std::vector<ProcessRecord> scan_processes();

}  // namespace nv::guest::agent
