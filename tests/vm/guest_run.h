// guest_run.h — the VM tests' way to run a program on a leased VM straight over its guest channel
// (no executor): stdout, or "ERROR: ..." with the exit code and stderr. Header-only: the tests
// that include it link nv_exec_executor (VmLease) and nv_guest_channel already.
#pragma once

#include <chrono>
#include <string>

#include "guest/host/guest_channel.h"
#include "pool_client.h"

namespace nv::test {

inline std::string run_in_guest(const exec::VmLease& l, schema::Language lang,
                                const std::string& code, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto ch =
      guest::GuestChannel::connect(l.channel_path, guest::ChannelKind::unix_stream, 0, deadline);
  if (!ch.ok()) return "ERROR: connect: " + ch.error().message;
  guest::ExecSpec spec;
  spec.language = lang;
  spec.code = code;
  spec.timeout_ms = static_cast<uint32_t>(timeout.count() * 1000 - 2000);
  std::string out, err;
  auto o = ch.value()->exec(
      spec,
      [&](schema::Stream s, std::string_view d) {
        (s == schema::Stream::STDOUT ? out : err).append(d);
      },
      deadline);
  if (!o.ok()) return "ERROR: exec: " + o.error().message;
  if (o.value().exit_code != 0) {
    return "ERROR: exit " + std::to_string(o.value().exit_code) + ": " + err + o.value().error;
  }
  return out;
}

}  // namespace nv::test
