// mounts.h — the guest end of host directories (issue 15; guest.capnp mountSetup, mountSeal).
//
// A mount's content is copied in by the host (writeChunk, fileOp mkdir) into a tmpfs the agent
// makes at the mount's path; the tmpfs's size= and nr_inodes= are the content plus the mount's
// quota, so the quota holds inside the guest (ENOSPC). A read-only mount is then sealed by a bind
// remount with MS_RDONLY: every write, chmod, rename, unlink below it fails with EROFS, for root
// too. Paths: clean (files.h), strictly below /home/agent; the directory is made (with parents,
// owned by the run user) when missing; no symlink is followed on the way.
#pragma once

#include <cstdint>
#include <string>

namespace nv::guest::agent {

struct AgentConfig;

// Mounts the tmpfs at `path` (mode 0755, owned by the run user). false with `error` on failure
// (a path outside /home/agent, a size < 4096 or inodes < 2, or the mount syscall's errno).
bool mount_setup(const AgentConfig& config, const std::string& path, uint64_t size_bytes,
                 uint64_t inodes, std::string& error);
// Remounts the mount at `path` read-only (MS_BIND | MS_REMOUNT | MS_RDONLY).
bool mount_seal(const AgentConfig& config, const std::string& path, std::string& error);

}  // namespace nv::guest::agent
