// mount_copier.h — the host side of host directories (issue 15): what nv-mount-copier does, as
// functions on file descriptors so unit tests drive them against real temp trees.
//
// Every host path is reached from the mount's directory fd with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) and O_NOFOLLOW: no symlink is
// followed anywhere, no path leaves the directory or its file system. Symlinks, device nodes,
// fifos, sockets and regular files with more than one hard link are skipped and reported
// ("<path>: <why>"). A file is written to an O_EXCL temp file (".nv-sync-<name>-<pid>-<n>") in
// its own directory, fsync'd and renamed over the target: a crash leaves the old file or the new
// one, and at most a stray temp file. The record protocol is mount_wire.h.
#pragma once

#include <cstdint>
#include <string>

namespace nv::mounts {

struct CopyInLimits {
  uint64_t max_bytes = 1ull << 30;  // regular-file bytes in the whole tree
  uint64_t max_files = 100000;      // files + directories
};

// Writes the copy-in records of the tree below `root_fd` (a directory fd) to `out_fd`, ending
// with 'Z' (or 'E' on failure: unreadable tree, limits passed = kErrQuota). Returns 0 or 1.
int copy_in(int root_fd, const CopyInLimits& limits, int out_fd);

// Reads sync records from `in_fd`, applies them below `root_fd`, answers on `out_fd` (see
// mount_wire.h). A file changed on the host since the copy-in (size, mtime or inode differ from
// the manifest) is never replaced nor removed: it is reported "conflict". Returns 0 or 1.
int sync_out(int root_fd, int in_fd, int out_fd);

// Confines the calling process to `dir` with Landlock (read-only rights, or read-write with
// `write`) after PR_SET_NO_NEW_PRIVS. "" on success, else why (Landlock missing or refused).
std::string confine(const std::string& dir, bool write);

// openat2(dirfd, path, flags | O_CLOEXEC | O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), mode for O_CREAT. -1 with errno on failure.
int open_beneath(int dirfd, const std::string& path, int flags, unsigned mode = 0);

// Pipe I/O: the whole buffer (EINTR retried) / one record body (kMaxRecord cap). false on EOF or
// error (`error` says which).
bool write_all(int fd, const std::string& data);
bool read_record(int fd, std::string& body, std::string& error);

}  // namespace nv::mounts
