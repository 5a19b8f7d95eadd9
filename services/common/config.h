// config.h — options from flags and NV_* environment variables, with --help.
//
// Each option has a name, a type, a default and a help line. Precedence: flag > environment
// (NV_<NAME> with '-' as '_', upper case) > default. Every bad value is reported in one run.
//
// One vocabulary across the programs (README "Vocabulary"):
//   - durations are integers of milliseconds, named *-ms; an older name in seconds stays as a
//     deprecated alias (alias_flag with scale 1000), and code reading the old name still gets
//     seconds, so renaming an option changes its table and nothing else;
//   - env_scope("LLM_GATEWAY") before a program's own options makes their variables unique to it
//     (NV_LLM_GATEWAY_CONCURRENCY); the shared NV_<NAME> is still read after it, deprecated;
//   - range(name, min, max) bounds a number: checked in parse, printed in --help.
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
  // An older spelling of option `name`: "--alias V" (and NV_<ALIAS>) set `name` to V * scale
  // (scale 1000: an alias in seconds for an option in milliseconds; fractions allowed).
  // integer(alias) / number(alias) / str(alias) read the value back in the alias's unit.
  Config& alias_flag(const std::string& name, std::string alias, double scale = 1.0);
  // A string option given more than once as a flag collects every value, comma-separated
  // (read it back with split_commas); otherwise the last flag wins.
  Config& repeatable(const std::string& name);
  // Bounds of a number option, inclusive; out of range is an error naming them.
  Config& range(const std::string& name, double min, double max);
  // Options added after this get NV_<SCOPE>_<NAME> as their variable (then NV_<NAME>, the
  // deprecated shared form, unless shared_fallback is false: a service that never read the
  // shared form must not pick up another service's NV_LISTEN). "" ends the scope.
  Config& env_scope(std::string scope, bool shared_fallback = true);

  // Parses argv; "--name value", "--name=value", "--flag", "--no-flag". Arguments after "--" or
  // not starting with "--" are positional (services refuse them: service_main exits 2).
  // Fails with every problem listed in one message.
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
  // The variables option `name` is read from, first wins (NV_<SCOPE>_<NAME>, NV_<NAME>, aliases).
  std::vector<std::string> env_names(const std::string& name) const;

 private:
  struct Option {
    Type type = Type::string;
    std::string help;
    std::string value;
    std::string def;
    std::string source = "default";
    std::vector<std::string> alias_envs;
    std::string scope;            // env_scope when it was added
    bool shared_fallback = true;  // NV_<NAME> read after NV_<SCOPE>_<NAME>
    bool has_range = false;
    double min = 0, max = 0;
    bool repeatable = false;
  };
  struct Alias {
    std::string target;
    double scale = 1.0;
  };
  const Option& find(const std::string& name) const;
  static Option make_option(Type type, std::string help, const std::string& def);
  Option& add(const std::string& name, Option opt);
  std::string in_alias_unit(const std::string& name, const std::string& value) const;
  static bool valid(Type type, const std::string& value);

  std::string program_;
  std::string summary_;
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
  std::map<std::string, Alias> aliases_;
  std::string scope_;
  bool shared_fallback_ = true;
  bool help_ = false;
};

// "a,b,,c" -> {"a", "b", "c"}: the items of a comma-separated option, empty ones skipped.
std::vector<std::string> split_commas(const std::string& text);

}  // namespace nv
