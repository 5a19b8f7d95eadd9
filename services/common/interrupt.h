// interrupt.h — Ctrl-C and SIGTERM in the command-line clients (nv-exec, nv-submit, nv-audit,
// nv, nv-bench).
//
// install() sets SIGINT and SIGTERM handlers without SA_RESTART that only record the signal, so
// a blocking call returns EINTR and the client's loop sees requested() at once. nv::Client
// (client.h) answers EINTR by returning to its caller, and Client::call() cancels its request
// upstream (the broker forwards the cancel: the executor releases the VM, the gateway abandons
// the model call) and returns a `cancelled` error. The client then prints one line saying what
// was cancelled and exits with exit_code(): 130 after SIGINT, 143 after SIGTERM (128 + signal,
// the shells' convention).
#pragma once

#include <string>

namespace nv::interrupt {

// Installs the handlers (idempotent). Call before the first request.
void install();
// The signal received (SIGINT or SIGTERM), or 0.
int requested();
// 128 + the signal received (130, 143), or 0 when none was.
int exit_code();
// "SIGINT" / "SIGTERM" / "signal N".
std::string signal_name(int sig);
// Sets the flag as the handler would (tests; a client that stops for its own reason).
void raise_flag(int sig);

}  // namespace nv::interrupt
