// sandbox_call.h — one SandboxRequest being handled (private to the sandbox service's .cc files).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/frames.h"
#include "sandbox_service.h"

namespace nv::exec {

struct SandboxService::Call {
  using Clock = std::chrono::steady_clock;
  std::shared_ptr<Request> req;
  schema::SandboxRequest::Reader r;
  std::string trace_id, owner, id;
  Clock::time_point start = Clock::now();
  Clock::time_point end = Clock::time_point::max();  // the caller's deadline

  // now + d, never past the caller's deadline.
  guest::Deadline bounded(milliseconds d) const { return std::min(Clock::now() + d, end); }
  double elapsed_ms() const {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  void fail(const Error& e) const { req->fail(e); }
  // Starts a reply; fill its union, then send().
  schema::SandboxReply::Builder reply() {
    mb = std::make_unique<capnp::MallocMessageBuilder>();
    auto b = bus::init_body<schema::SandboxReply>(*mb);
    b.setTraceId(trace_id);
    return b;
  }
  void send() { req->reply(*mb); }
  void reply_info(const sandbox::Info& info) {
    sandbox::to_capnp(info, reply().initInfo());
    send();
  }
  void reply_done() {
    reply().setDone();
    send();
  }
  std::unique_ptr<capnp::MallocMessageBuilder> mb;
};

// unknownSandbox, the same words for a missing id and another owner's.
inline Error unknown_sandbox(const std::string& id) {
  return make_error(ErrorCode::UNKNOWN_SANDBOX,
                    "no sandbox '" + id.substr(0, 128) + "' for this owner (list shows yours)");
}

}  // namespace nv::exec
