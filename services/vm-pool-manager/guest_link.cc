#include "guest_link.h"

#include <chrono>

#include "guest/host/guest_channel.h"

namespace nv::vm {
namespace {

guest::ChannelKind kind_of(const VmInfo& vm) {
  return vm.channel_kind == ChannelKind::hybridVsock ? guest::ChannelKind::hybrid_vsock
                                                     : guest::ChannelKind::unix_stream;
}

Error channel_error(const std::string& what, const guest::ChannelError& e) {
  ErrorCode code = ErrorCode::VM_FAILED;
  if (e.code == guest::ChannelErrc::timeout) code = ErrorCode::TIMED_OUT;
  if (e.code == guest::ChannelErrc::protocol || e.code == guest::ChannelErrc::rate_limited) {
    code = ErrorCode::GUEST_PROTOCOL;
  }
  return make_error(code, what + ": " + guest::to_string(e.code) + ": " + e.message);
}

}  // namespace

Status ChannelGuestLink::wait_ready(const VmInfo& vm, Deadline deadline) {
  auto ch = guest::GuestChannel::connect(vm.channel_path, kind_of(vm), vm.vsock_port, deadline);
  if (!ch.ok()) return channel_error("guest channel " + vm.channel_path, ch.error());
  return {};
}

Status ChannelGuestLink::reseed(const VmInfo& vm, const std::string& entropy,
                                const std::string& vm_id, Deadline deadline) {
  return reseed_with(vm, entropy, vm_id, deadline, nullptr);
}

Status ChannelGuestLink::configure_network(const VmInfo& vm, const std::string& entropy,
                                           const std::string& vm_id, const VmNetInfo& net,
                                           Deadline deadline) {
  guest::GuestNetwork gn{net.mac, net.ipv4, net.gateway};
  return reseed_with(vm, entropy, vm_id, deadline, &gn);
}

Status ChannelGuestLink::reseed_with(const VmInfo& vm, const std::string& entropy,
                                     const std::string& vm_id, Deadline deadline,
                                     const guest::GuestNetwork* network) {
  auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  guest::Identity id;
  auto ch =
      guest::GuestChannel::connect_and_reseed(vm.channel_path, kind_of(vm), vm.vsock_port, entropy,
                                              vm_id, now_ns, deadline, &id, {}, network);
  if (!ch.ok()) return channel_error("reseed over " + vm.channel_path, ch.error());
  if (id.vm_id != vm_id) {
    return make_error(ErrorCode::GUEST_PROTOCOL,
                      "reseed: guest reports id '" + id.vm_id + "', expected " + vm_id);
  }
  return {};
}

Status ChannelGuestLink::warm_up(const VmInfo& vm, Deadline deadline) {
  auto ch = guest::GuestChannel::connect(vm.channel_path, kind_of(vm), vm.vsock_port, deadline);
  if (!ch.ok()) return channel_error("guest channel " + vm.channel_path, ch.error());
  uint32_t id = 1;
  for (schema::Language lang : ch.value()->hello().languages) {
    guest::ExecSpec spec;
    spec.id = id++;
    spec.language = lang;
    switch (lang) {
      case schema::Language::PYTHON:  // the interpreter and the modules programs import most
        spec.code = "import json, re, math, random, collections, itertools, datetime, hashlib";
        break;
      case schema::Language::JAVASCRIPT:
        spec.code = "JSON.stringify({warm: Math.sqrt(2)})";
        break;
      default:
        spec.code = "true";
        break;
    }
    auto out = ch.value()->exec(
        spec, [](schema::Stream, std::string_view) {}, deadline);
    if (!out.ok()) return channel_error("warm-up exec", out.error());
    if (out.value().exit_code != 0) {
      return make_error(ErrorCode::VM_FAILED,
                        "warm-up program for language " + std::to_string(static_cast<int>(lang)) +
                            " exited with " + std::to_string(out.value().exit_code) + ": " +
                            out.value().error);
    }
  }
  return {};
}

}  // namespace nv::vm
