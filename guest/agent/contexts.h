// contexts.h — persistent code contexts (guest.capnp GuestExec.context, resetContext).
//
// A context is one long-lived interpreter (python3 or node) running a small driver program
// (contexts.cc) that executes each request's code in one persistent namespace, like a notebook
// cell: python exec()s it in a globals dict kept across cells; node runs it with
// vm.runInThisContext (top-level var/let/const/function persist; require is a global).
//
// The driver talks to the agent on two extra pipes, so nothing the program prints can fake its
// framing: fd 3 (agent → driver) carries requests, each `u32le code_len, u32le stdin_len, code,
// stdin`; fd 4 (driver → agent) carries one `i32le status` after each cell, written only after
// the cell's stdout/stderr were flushed (and one i32le -1 when the driver is ready: a new
// interpreter's start-up is bounded by 60 s of its own, not by the first cell's timeout). stdout/stderr are the interpreter's own pipes, read as
// chunks while a cell runs (output written between cells, e.g. by a thread, waits in the 1 MiB
// pipes and shows up at the next cell). An exception prints its traceback to stderr and gives status 1; the context
// lives on. A timeout SIGKILLs the interpreter's process group and forgets the context; so does
// reset(). The interpreter starts with the first cell's environment, cwd and user; later cells'
// env and cwd are not applied (the context keeps its own os.chdir / process.env).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "guest/agent/exec_core.h"

namespace nv::guest::agent {

class Contexts {
 public:
  Contexts();
  ~Contexts();  // kills every interpreter
  Contexts(const Contexts&) = delete;
  Contexts& operator=(const Contexts&) = delete;

  // Context names: 1..64 bytes of [A-Za-z0-9._-].
  static bool valid_name(const std::string& name);
  // Whether `language` (nv::schema::Language as an integer) can have contexts.
  static bool supports(uint16_t language);

  // Runs `code` in the context `name`, starting its interpreter (`spec.argv[0]`, the
  // language's program; the rest of argv is replaced by the driver) on first use with `spec`'s
  // environment, cwd, user and rlimits. spec.timeout, output_cap, tail_bytes and flush
  // settings apply to this cell; spec.stdin_data is the cell's stdin.
  ExecOutcome run(const std::string& name, uint16_t language, const std::string& code,
                  const ExecSpec& spec, const ChunkSink& sink);
  // Kills the context's interpreter; false when there was none.
  bool reset(const std::string& name);
  // The context whose interpreter leads session `sid` ("" if none).
  std::string name_for_session(int sid) const;
  // Session ids of live interpreters.
  std::vector<int> sessions() const;

 private:
  struct Context;
  void forget(const std::string& name);

  std::map<std::string, std::unique_ptr<Context>> live_;
};

}  // namespace nv::guest::agent
