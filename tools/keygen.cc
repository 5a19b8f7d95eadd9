// nv-keygen: writes a CURVE key pair for the bus's tcp:// endpoints.
//
//   nv-keygen NAME [--dir DIR]
//     DIR/NAME.key  "public=<z85>\nsecret=<z85>\n", mode 0600 (the orchestrator's or a client's)
//     DIR/NAME.pub  "public=<z85>\n", mode 0644 (goes into the orchestrator's --curve-allow dir)
//   nv-keygen --api --tenant T [--scopes sandbox,task] [--keys-file FILE]
//     appends "ID TENANT SCOPES HASH" to FILE (0600; default $NV_STATE_DIR/api-keys, with
//     NV_STATE_DIR defaulting to $NV_RUNTIME_DIR/state) and prints the key nvk_ID_SECRET once
//     (services/api/api_keys.h). nv-api reloads the file when it changes.
// Existing files are never overwritten. Exit codes: 0 written, 1 failure, 2 usage error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/config.h"
#include "common/curve.h"
#include "common/service.h"
#ifdef NV_HAVE_API_KEYS
#include "api_keys.h"
#endif

namespace {

int api_key(const nv::Config& c) {
#ifdef NV_HAVE_API_KEYS
  uint8_t scopes = 0;
  if (!nv::api::parse_scopes(c.str("scopes"), &scopes)) {
    std::fprintf(stderr, "nv-keygen: --scopes '%s': a comma list of sandbox, task, admin\n",
                 c.str("scopes").c_str());
    return 2;
  }
  std::string file = c.str("keys-file");
  if (file.empty()) {
    file = nv::api::default_keys_file(nv::default_runtime_dir());
    std::string dir = file.substr(0, file.rfind('/'));
    ::mkdir(dir.c_str(), 0700);  // RUNTIME/state for a stack started by hand
  }
  nv::api::KeyRecord rec;
  auto key = nv::api::generate_key(c.str("tenant"), scopes, &rec);
  if (!key) {
    std::fprintf(stderr, "nv-keygen: %s\n", key.error().message.c_str());
    return 2;
  }
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "nv-keygen: cannot open %s: %s\n", file.c_str(), std::strerror(errno));
    return 1;
  }
  // Run as root for a service that runs as another user (systemd: /var/lib/neurovisor belongs
  // to user neurovisor), the key file goes to the owner of its directory, or nv-api could not
  // read it.
  if (::geteuid() == 0) {
    std::string dir =
        file.substr(0, file.find_last_of('/') == std::string::npos ? 0 : file.find_last_of('/'));
    struct stat st {};
    if (!dir.empty() && ::stat(dir.c_str(), &st) == 0 && st.st_uid != 0 &&
        ::fchown(fd, st.st_uid, st.st_gid) != 0) {
      std::fprintf(stderr, "nv-keygen: cannot give %s to uid %u: %s\n", file.c_str(),
                   static_cast<unsigned>(st.st_uid), std::strerror(errno));
    }
  }
  std::string line = nv::api::record_line(rec);
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) {
    std::fprintf(stderr, "nv-keygen: cannot write %s\n", file.c_str());
    return 1;
  }
  std::fprintf(stderr, "added key %s (tenant %s, scopes %s) to %s; it is shown only now:\n",
               rec.id.c_str(), rec.tenant.c_str(), nv::api::scopes_text(scopes).c_str(),
               file.c_str());
  std::printf("%s\n", key->c_str());
  return 0;
#else
  (void)c;
  std::fprintf(stderr, "nv-keygen: built without nv-api (libcpp-httplib-dev, libsodium-dev)\n");
  return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  nv::Config c("nv-keygen NAME",
               "Writes a CURVE key pair NAME.key (0600) and NAME.pub for tcp:// bus endpoints.\n"
               "Copy NAME.pub into the orchestrator's --curve-allow directory to let NAME in.");
  c.add_string("dir", ".", "directory to write the key files into");
  c.add_bool("api", false, "make an nv-api key instead (NAME not used)");
  c.add_string("tenant", "", "--api: the tenant the key acts for (1..64 bytes [a-zA-Z0-9._-])");
  c.add_string("scopes", "sandbox,task", "--api: what the key may do: sandbox, task, admin");
  c.add_string("keys-file", "",
               "--api: the key file (default $NV_STATE_DIR/api-keys; as root on an install: "
               "/var/lib/neurovisor/api-keys; else RUNTIME/state/api-keys)");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-keygen: %s\n", st.error().message.c_str());
    return 2;
  }
  if (c.boolean("api")) return api_key(c);
  if (c.positional().size() != 1) {
    std::fprintf(stderr, "nv-keygen: expected exactly one NAME (see --help)\n");
    return 2;
  }
  const std::string& name = c.positional()[0];
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
    std::fprintf(stderr, "nv-keygen: NAME '%s' must be a plain file name\n", name.c_str());
    return 2;
  }
  const std::string& dir = c.str("dir");
  // Checked up front so a half-written pair (NAME.key without NAME.pub) is never left behind.
  for (const char* ext : {".key", ".pub"}) {
    std::string path = dir + "/" + name + ext;
    if (::access(path.c_str(), F_OK) == 0) {
      std::fprintf(stderr, "nv-keygen: %s exists; existing keys are never overwritten\n",
                   path.c_str());
      return 1;
    }
  }
  auto keys = nv::curve::generate();
  if (!keys) {
    std::fprintf(stderr, "nv-keygen: %s\n", keys.error().message.c_str());
    return 1;
  }
  if (auto w = nv::curve::write_files(dir, name, keys.value()); !w) {
    std::fprintf(stderr, "nv-keygen: %s (existing keys are never overwritten)\n",
                 w.error().message.c_str());
    return 1;
  }
  std::printf("wrote %s/%s.key (0600) and %s/%s.pub\npublic=%s\n", dir.c_str(), name.c_str(),
              dir.c_str(), name.c_str(), keys->public_key.c_str());
  return 0;
}
