// interrupt.cc — see interrupt.h.
#include "interrupt.h"

#include <signal.h>

#include <atomic>

namespace nv::interrupt {

namespace {

std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "used from a signal handler");

void on_signal(int sig) {
  int none = 0;
  g_signal.compare_exchange_strong(none, sig);  // the first signal decides the exit status
}

}  // namespace

void install() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and the loop notices
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int requested() { return g_signal.load(); }

int exit_code() {
  int s = g_signal.load();
  return s == 0 ? 0 : 128 + s;
}

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

void raise_flag(int sig) { on_signal(sig); }

}  // namespace nv::interrupt
