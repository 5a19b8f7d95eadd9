// sandbox_mounts.h — host directories in sandboxes (issue 15; sandbox.capnp Mount, MountSync).
//
// Mechanism: copy-in at create, copy-out (read-write mounts) at `sync` and when the owner
// destroys the sandbox or the reaper ends it (best effort). The guest never touches a host file
// system; the host side is nv-mount-copier (mount_copier.h), spawned per copy-in/sync and
// confined by Landlock to the one mounted directory.
//
// Policy (validate_mounts, before any lease): shapes → badRequest (at most 8; hostPath absolute;
// guestPath clean and strictly below /home/agent; no guestPath inside another); the host path is
// resolved with realpath (symlinks followed once, here) and must be a directory equal to or
// below one of --mount-root (themselves resolved) → else mountRefused naming the rule and the
// roots. With no --mount-root every mount is refused. The resolved path is what is kept and used.
//
// Sync semantics (per read-write mount): the guest tree is listed (symlinks and special files
// are reported skipped, never followed). Quota: the guest's regular-file bytes may exceed the
// copied-in bytes by quotaBytes, its entries the copied-in ones by quotaFiles, else mountQuota
// and nothing of that mount is written. A guest file is sent when it is new or its size/mtime
// differ from what the guest had after the last copy; the copier replaces the host file only
// when the host file is unchanged since the copy-in/last sync (size, mtime ns, inode), else
// "conflict" (the host's copy is kept). Files and empty directories removed in the guest are
// removed on the host only when unchanged there. A file written since is the new baseline.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/sandbox_client.h"
#include "guest/host/guest_channel.h"

namespace nv::exec {

struct MountOptions {
  std::vector<std::string> roots;           // --mount-root (resolved); empty = refuse all
  uint64_t quota_bytes = 256ull << 20;      // --mount-quota-bytes
  uint32_t quota_files = 10000;             // --mount-quota-files
  uint64_t max_copy_in_bytes = 1ull << 30;  // a host directory's content at most
  uint64_t max_copy_in_files = 100000;
  std::string copier;  // nv-mount-copier; "" = next to this program
};

// One entry of a mount's manifest (rel: path below the mount, "/"-separated).
struct MountEntry {
  bool dir = false;
  uint64_t host_size = 0, host_ino = 0;
  int64_t host_mtime_ns = 0;
  uint64_t guest_size = 0;
  int64_t guest_mtime_ms = 0;
};

struct MountState {
  sandbox::Mount mount;  // resolved host path, effective quotas
  uint64_t copied_bytes = 0, copied_files = 0;
  std::map<std::string, MountEntry> entries;
};

// Checks and resolves `mounts` (see the header). badRequest or mountRefused.
Status validate_mounts(std::vector<sandbox::Mount>& mounts, const MountOptions& options);

// Copies each mount into the guest (mountSetup, mkdirs, writes, mountSeal for read-only).
// Errors: the copier's (mountQuota for a directory above the copy-in limits, internal) or the
// channel's (as vmFailed/guest errors by the caller's mapping: `channel_error` is set then).
Result<std::vector<MountState>> copy_in(guest::GuestChannel& ch,
                                        const std::vector<sandbox::Mount>& mounts,
                                        const MountOptions& options, guest::Deadline deadline,
                                        guest::ChannelError& channel_error);

// Copies the read-write mounts out (see the header). One MountSync per read-write mount.
Result<std::vector<sandbox::MountSync>> sync_out(guest::GuestChannel& ch,
                                                 std::vector<MountState>& mounts,
                                                 const MountOptions& options,
                                                 guest::Deadline deadline,
                                                 guest::ChannelError& channel_error);

// The registry's form of the states (mount_wire.h records) and back ({} on a corrupt blob).
std::string encode_state(const std::vector<MountState>& mounts);
std::vector<MountState> decode_state(const std::string& blob);

// True when one of `mounts` is read-write (something to sync).
bool has_rw_mounts(const std::vector<MountState>& mounts);

// The copier next to the running executor (/proc/self/exe's directory).
std::string default_copier();

}  // namespace nv::exec
