// config.h — options from flags and NV_* environment variables, with --help.
//
// Each option has a name, a type, a default and a help line. Precedence: flag > environment
// (NV_<NAME> with '-' as '_', upper case) > default. Every bad value is reported in one run.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "error.h"

namespace nv {

class Config {
 public:
  enum class Type { string, integer, number, boolean };

  Config(std::string program, std::string summary);

  Config& add_string(std::string name, std::string def, std::string help);
  Config& add_int(std::string name, int64_t def, std::string help);
  Config& add_number(std::string name, double def, std::string help);
  Config& add_bool(std::string name, bool def, std::string help);
  // Also read this environment variable (e.g. OLLAMA_HOST) when NV_<NAME> is not set.
  Config& alias_env(const std::string& name, std::string env);

  // Parses argv; "--name value", "--name=value", "--flag", "--no-flag". Arguments after "--" or
  // not starting with "--" are positional. Fails with every problem listed in one message.
  Status parse(int argc, const char* const* argv);
  bool help_requested() const { return help_; }
  std::string help() const;

  const std::string& str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool boolean(const std::string& name) const;
  // Where the value came from: "flag", "env NV_X", "default".
  std::string source(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Sets a value programmatically (tests, derived defaults); validates like parse.
  Status set(const std::string& name, const std::string& value, std::string source = "set");

  static std::string env_name(const std::string& name);

 private:
  struct Option {
    Type type;
    std::string help;
    std::string value;
    std::string def;
    std::string source = "default";
    std::vector<std::string> alias_envs;
  };
  const Option& find(const std::string& name) const;
  static bool valid(Type type, const std::string& value);

  std::string program_;
  std::string summary_;
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace nv
