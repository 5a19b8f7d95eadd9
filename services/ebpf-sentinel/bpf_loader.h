// Loading a BPF skeleton so that one refused program does not take the others down: the whole
// object is tried first; if the kernel refuses it, each program is tried on its own (fresh open,
// only that program autoloaded) to learn which ones fail and with which errno, and the object is
// then loaded with the programs that passed.
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <functional>
#include <string>
#include <vector>

#include "status.h"

namespace nv::sentinel {

// Routes libbpf's own messages into a buffer so a failure can carry libbpf's explanation (the
// verifier's complaint, "failed to load: -1", ...). Installed once per process.
void capture_libbpf_messages();
// Last libbpf warning lines since the previous call (and clears them).
std::string take_libbpf_messages();

// Program names and sections of a skeleton object (before load).
struct ProgramInfo {
  std::string name;
  std::string section;
};
std::vector<ProgramInfo> list_programs(bpf_object* obj);

// Loads a skeleton of type Skel (bpftool's C++ helpers: Skel::open/load/destroy).
// `configure` runs after every open and before load: set rodata, reuse shared maps; it returns
// a failed Status to abort. On return `*out` is the loaded skeleton or nullptr when nothing
// loaded; the statuses say which programs are usable.
template <class Skel>
std::vector<ProgramStatus> load_skeleton(const std::string& object_name, Skel** out,
                                         const std::function<Status(Skel*)>& configure) {
  std::vector<ProgramStatus> result;
  *out = nullptr;
  Skel* skel = Skel::open();
  if (!skel) {
    int err = errno;
    ProgramStatus st{"*", object_name, "", false, false, err, "open: " + take_libbpf_messages()};
    result.push_back(st);
    return result;
  }
  for (const ProgramInfo& p : list_programs(skel->obj))
    result.push_back(ProgramStatus{p.name, object_name, p.section, false, false, 0, ""});

  auto configure_or_fail = [&](Skel* s, const std::string& step) -> bool {
    Status c = configure(s);
    if (c.ok()) return true;
    for (ProgramStatus& st : result) {
      st.errnum = c.error().errnum;
      st.detail = step + ": " + c.error().text();
    }
    return false;
  };

  // 1. The whole object.
  if (!configure_or_fail(skel, "configure")) {
    Skel::destroy(skel);
    return result;
  }
  take_libbpf_messages();
  int err = Skel::load(skel);
  if (err == 0) {
    for (ProgramStatus& st : result) st.loaded = true;
    *out = skel;
    return result;
  }
  Skel::destroy(skel);

  // 2. Each program alone, to learn who is refused and why.
  std::vector<std::string> passed;
  for (ProgramStatus& st : result) {
    Skel* one = Skel::open();
    if (!one) {
      st.errnum = errno;
      st.detail = "open: " + take_libbpf_messages();
      continue;
    }
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, one->obj) {
      bpf_program__set_autoload(prog, st.name == bpf_program__name(prog));
    }
    if (!configure_or_fail(one, "configure")) {
      Skel::destroy(one);
      return result;
    }
    take_libbpf_messages();
    int e = Skel::load(one);
    if (e == 0) {
      passed.push_back(st.name);
    } else {
      st.errnum = -e;
      st.detail = "load: " + take_libbpf_messages();
    }
    Skel::destroy(one);
  }
  if (passed.empty()) return result;

  // 3. The object with the programs that passed.
  skel = Skel::open();
  if (!skel) return result;
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) {
    bool keep = false;
    for (const std::string& n : passed) keep = keep || n == bpf_program__name(prog);
    bpf_program__set_autoload(prog, keep);
  }
  if (!configure_or_fail(skel, "configure")) {
    Skel::destroy(skel);
    return result;
  }
  err = Skel::load(skel);
  if (err != 0) {
    std::string msg = take_libbpf_messages();
    for (ProgramStatus& st : result) {
      if (st.errnum == 0) {
        st.errnum = -err;
        st.detail = "load (subset): " + msg;
      }
    }
    Skel::destroy(skel);
    return result;
  }
  for (ProgramStatus& st : result) st.loaded = st.errnum == 0;
  *out = skel;
  return result;
}

// Records an attach outcome on the status named `name`.
void note_attach(std::vector<ProgramStatus>& statuses, const std::string& name, int errnum,
                 const std::string& what);

// Identity of a cgroup2 directory: its cgroup id (= inode number of the dir on cgroup2, what
// bpf_get_current_cgroup_id() returns for its members) and an O_RDONLY|O_DIRECTORY fd for
// attaching. The fd is owned by the caller.
struct CgroupDir {
  int fd = -1;
  unsigned long long id = 0;
};
Status open_cgroup2_dir(const std::string& path, CgroupDir* out);

}  // namespace nv::sentinel
