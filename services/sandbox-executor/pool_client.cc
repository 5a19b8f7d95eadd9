#include "pool_client.h"

#include <nv/schema/vm.capnp.h>

#include <algorithm>
#include <cstdint>

namespace nv::exec {

namespace {
// The pool answers a lease within its own deadline; ours adds room for the round trip.
constexpr std::chrono::milliseconds kLeaseSlack{2000};

Error unreachable(const std::string& endpoint, const Error& e) {
  if (e.code != ErrorCode::TIMED_OUT) return e;
  return make_error(ErrorCode::VM_FAILED,
                    "vm-pool-manager at " + endpoint + " did not answer (" + e.message +
                        "); is nv-vm-pool-manager running?",
                    true);
}
}  // namespace

PoolClient::PoolClient(zmq::context_t& ctx, ClientOptions options)
    : client_(ctx, options), endpoint_(options.endpoint) {}

Result<VmLease> PoolClient::lease(const std::string& trace_id, schema::SizeTier tier,
                                  std::chrono::milliseconds wait,
                                  std::chrono::milliseconds lifetime) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::LeaseRequest>(mb);
  req.setTraceId(trace_id);
  req.setTier(tier);
  req.setDeadlineMs(static_cast<uint32_t>(std::max<int64_t>(1, wait.count())));
  req.setLeaseMs(static_cast<uint32_t>(std::clamp<int64_t>(lifetime.count(), 0, UINT32_MAX)));
  auto r = client_.call("vm.lease", &mb, wait + kLeaseSlack, {}, trace_id);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::Lease>();
  if (!body) return body.error();
  auto l = body.value();
  VmLease out;
  out.vm_id = l.getVmId();
  switch (l.getChannelKind()) {
    case schema::ChannelKind::UNIX_STREAM:
      out.channel_kind = "unixStream";
      break;
    case schema::ChannelKind::HYBRID_VSOCK:
      out.channel_kind = "hybridVsock";
      break;
    default:
      return make_error(ErrorCode::VM_FAILED,
                        "vm-pool-manager leased VM " + out.vm_id + " without a channel kind");
  }
  out.channel_path = l.getChannelPath();
  out.vsock_port = l.getVsockPort();
  out.backend = l.getBackend();
  out.accel = l.getAccel();
  out.vcpus = l.getResources().getVcpus();
  out.memory_mib = l.getResources().getMemoryMib();
  out.boot_ms = l.getBootMs();
  out.wait_ms = l.getWaitMs();
  out.lease_ms = l.getLeaseMs();
  if (out.vm_id.empty() || out.channel_path.empty()) {
    return make_error(ErrorCode::VM_FAILED, "vm-pool-manager sent a lease without vmId/channel");
  }
  return out;
}

Status PoolClient::release(const std::string& trace_id, const std::string& vm_id,
                           const std::string& reason, std::chrono::milliseconds timeout) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::ReleaseRequest>(mb);
  req.setTraceId(trace_id);
  req.setVmId(vm_id);
  req.setReason(reason);
  auto r = client_.call("vm.release", &mb, timeout, {}, trace_id);
  if (!r) {
    if (r.error().code == ErrorCode::UNKNOWN_LEASE) return {};
    return unreachable(endpoint_, r.error());
  }
  return {};
}

Result<PoolCounts> PoolClient::status(std::chrono::milliseconds timeout) {
  capnp::MallocMessageBuilder mb;
  bus::init_body<schema::PoolStatusRequest>(mb);
  auto r = client_.call("vm.status", &mb, timeout);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::PoolStatus>();
  if (!body) return body.error();
  PoolCounts c;
  c.backend = body->getBackend();
  c.accel = body->getAccel();
  for (auto t : body->getTiers()) {
    c.warm += t.getWarm();
    c.active += t.getActive();
    c.booting += t.getBooting();
    c.max += t.getMax();
    c.waiting += t.getWaiting();
  }
  return c;
}

}  // namespace nv::exec
