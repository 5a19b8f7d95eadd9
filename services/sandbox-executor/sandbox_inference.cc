// sandbox_inference.cc — a sandbox's inference bridge (inference_bridge.h): started when a
// sandbox with InferencePolicy.enabled gets a running VM (create, fork, resume, recovery), ended
// with the VM (pause, destroy, reaping).
#include "common/log.h"
#include "sandbox_call.h"

namespace nv::exec {

Status SandboxService::start_inference(Sandbox& s, guest::Deadline deadline) {
  s.inference.reset();
  sandbox::Inference policy;
  std::string sandbox_id;
  {
    std::lock_guard g(mu_);
    policy = s.rec.info.inference;
    sandbox_id = s.rec.info.sandbox_id;
  }
  if (!policy.enabled) {
    // A VM restored from a snapshot of a sandbox with inference still runs its listener.
    if (!s.rec.info.from_snapshot.empty() && s.channel) {
      if (auto e = s.channel->stop_inference(deadline)) {
        return make_error(ErrorCode::VM_FAILED,
                          "the guest agent did not stop its inference listener: " + e.message);
      }
    }
    return {};
  }
  if (!opt_.llm) {
    return make_error(ErrorCode::BAD_REQUEST, "this executor has no llm service to bridge to");
  }
  if (s.lease.inference_path.empty()) {
    return make_error(ErrorCode::BAD_REQUEST, "VM " + s.lease.vm_id + " (backend " +
                                                  s.lease.backend +
                                                  ") has no inference port (QEMU VMs have one)");
  }
  if (!s.channel) return make_error(ErrorCode::VM_FAILED, "no guest channel");
  InferenceAccount account;
  account.policy = policy;
  Sandbox* sp = &s;  // the bridge is a member of s: it ends before s does
  account.used = [this, sp] {
    std::lock_guard g(mu_);
    return sp->rec.info.inference_tokens_used;
  };
  account.charge = [this, sp](uint64_t tokens) {
    {
      std::lock_guard g(mu_);
      sp->rec.info.inference_tokens_used += tokens;
    }
    save(*sp);
  };
  const std::string trace = s.trace_id.empty() ? sandbox_id : s.trace_id;
  auto b = InferenceBridge::start(s.lease.inference_path, trace, std::move(account), opt_.llm,
                                  std::chrono::milliseconds(5000));
  if (!b) return b.error();
  s.inference = std::move(b.value());
  if (auto e = s.channel->start_inference(deadline)) {
    s.inference.reset();
    return make_error(ErrorCode::VM_FAILED,
                      "the guest agent did not start its inference listener: " + e.message);
  }
  log::info("inference bridge up", {{"sandbox_id", sandbox_id}, {"trace_id", trace}});
  return {};
}

}  // namespace nv::exec
