#include "pool_client.h"

#include <nv/schema/vm.capnp.h>

#include <algorithm>
#include <cstdint>

#include "pool_client_wire.h"

namespace nv::exec {

using wire::unreachable;

namespace {
// The pool answers a lease within its own deadline; ours adds room for the round trip.
constexpr std::chrono::milliseconds kLeaseSlack{2000};
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
  return wire::lease_of(body.value());
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
    c.fork_kits += t.getForkKits();
  }
  return c;
}

}  // namespace nv::exec
