// config — fuzzes option parsing from flags and NV_* environment variables
// (services/common/config.cc), with one option of each type like the services declare.
//
// Input: NUL-separated fields. Fields of the form NV_NAME=value (or OLLAMA_HOST=value) are set
// in the environment first; the others are argv[1..]. Checked: no crash, leak or UB; parse()
// either succeeds, after which every typed getter returns without throwing, or reports why.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> fields(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0)
      fields.emplace_back();
    else
      fields.back().push_back(static_cast<char>(data[i]));
  }
  std::vector<std::string> envs;
  std::vector<const char*> argv = {"nv-fuzz"};
  for (const auto& f : fields) {
    size_t eq = f.find('=');
    if ((f.rfind("NV_", 0) == 0 || f.rfind("OLLAMA_HOST=", 0) == 0) && eq != std::string::npos &&
        eq > 0) {
      std::string name = f.substr(0, eq);
      if (::setenv(name.c_str(), f.c_str() + eq + 1, 1) == 0) envs.push_back(name);
    } else {
      argv.push_back(f.c_str());
    }
  }
  nv::Config c("nv-fuzz", "fuzzing target");
  c.add_string("endpoint", "ipc:///run/nv/bus", "a string");
  c.add_int("max-vms", 4, "an integer");
  c.add_number("rate", 2.5, "a number");
  c.add_bool("verbose", false, "a boolean");
  c.alias_env("endpoint", "OLLAMA_HOST");
  auto st = c.parse(static_cast<int>(argv.size()), argv.data());
  if (st) {
    (void)c.str("endpoint");
    (void)c.integer("max-vms");
    (void)c.number("rate");
    (void)c.boolean("verbose");
    (void)c.source("rate");
    (void)c.help();
  } else if (st.error().message.empty()) {
    std::abort();
  }
  for (const auto& e : envs) ::unsetenv(e.c_str());
  return 0;
}
