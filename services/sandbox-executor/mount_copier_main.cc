// nv-mount-copier — the host-side reader/writer of one host directory (issue 15), spawned by
// nv-sandbox-executor per copy-in and per sync, talking records (mount_wire.h) on stdin/stdout.
//
//   nv-mount-copier copy-in DIR [--max-bytes N] [--max-files N]   tree → stdout
//   nv-mount-copier sync DIR                                      stdin → tree, answers → stdout
//   nv-mount-copier probe DIR PATH [--write|--create]   test mode: confine to DIR (read-write
//       with --write), then open PATH (creating it with --write/--create) and print "ok" or the
//       errno name (EACCES, ...)
//
// Before touching DIR it opens DIR (O_DIRECTORY | O_NOFOLLOW: DIR is the executor's resolved
// path) and confines itself with Landlock to exactly DIR (read-only rights for copy-in, read-write
// for sync) after PR_SET_NO_NEW_PRIVS; without Landlock it refuses to run (exit 3). Exit 0 = done,
// 1 = failed (an 'E' record says why), 2 = usage, 3 = confinement failed.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mount_copier.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: nv-mount-copier copy-in DIR [--max-bytes N] [--max-files N]\n"
               "       nv-mount-copier sync DIR\n"
               "       nv-mount-copier probe DIR PATH [--write]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string mode = argv[1], dir = argv[2];
  nv::mounts::CopyInLimits limits;
  bool write = mode == "sync", create = false;
  std::string probe;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--max-bytes" && i + 1 < argc) {
      limits.max_bytes = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--max-files" && i + 1 < argc) {
      limits.max_files = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--write" && mode == "probe") {
      write = create = true;
    } else if (a == "--create" && mode == "probe") {
      create = true;  // read-only confinement, but try to create PATH
    } else if (mode == "probe" && probe.empty()) {
      probe = a;
    } else {
      return usage();
    }
  }
  if (mode != "copy-in" && mode != "sync" && !(mode == "probe" && !probe.empty())) return usage();
  int root = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root < 0) {
    std::fprintf(stderr, "nv-mount-copier: open(%s): %s\n", dir.c_str(), std::strerror(errno));
    return 1;
  }
  if (auto why = nv::mounts::confine(dir, write); !why.empty()) {
    std::fprintf(stderr, "nv-mount-copier: cannot confine itself to %s: %s\n", dir.c_str(),
                 why.c_str());
    return 3;
  }
  if (mode == "probe") {
    int fd = ::open(probe.c_str(), (create ? O_WRONLY | O_CREAT : O_RDONLY) | O_CLOEXEC, 0600);
    if (fd >= 0) {
      std::printf("ok\n");
      return 0;
    }
    std::printf("%s\n", errno == EACCES ? "EACCES" : strerrorname_np(errno));
    return 0;
  }
  if (mode == "copy-in") return nv::mounts::copy_in(root, limits, STDOUT_FILENO);
  return nv::mounts::sync_out(root, STDIN_FILENO, STDOUT_FILENO);
}
