// nv-keygen: writes a CURVE key pair for the bus's tcp:// endpoints.
//
//   nv-keygen NAME [--dir DIR]
//     DIR/NAME.key  "public=<z85>\nsecret=<z85>\n", mode 0600 (the orchestrator's or a client's)
//     DIR/NAME.pub  "public=<z85>\n", mode 0644 (goes into the orchestrator's --curve-allow dir)
// Existing files are never overwritten. Exit codes: 0 written, 1 failure, 2 usage error.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/config.h"
#include "common/curve.h"

int main(int argc, char** argv) {
  nv::Config c("nv-keygen NAME",
               "Writes a CURVE key pair NAME.key (0600) and NAME.pub for tcp:// bus endpoints.\n"
               "Copy NAME.pub into the orchestrator's --curve-allow directory to let NAME in.");
  c.add_string("dir", ".", "directory to write the key files into");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-keygen: %s\n", st.error().message.c_str());
    return 2;
  }
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
