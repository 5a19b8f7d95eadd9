@0xf45a061a1229c3aa;
# vm.capnp — nv-vm-pool-manager's local service, used by the sandbox-executor on the same host.
# The pool manager binds its own ROUTER (ipc://$NV_RUNTIME_DIR/vm-pool.sock) and speaks the bus
# framing of bus.capnp with services "vm.lease", "vm.release" and "vm.status".

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";

enum ChannelKind {
  unset @0;
  unixStream @1;    # a Unix stream socket wired to the guest (QEMU virtio-serial chardev)
  hybridVsock @2;   # Firecracker's vsock UDS: send "CONNECT <port>\n", read "OK <n>\n" first
}

struct LeaseRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  tier @2 :Common.SizeTier;     # unset = small
  deadlineMs @3 :UInt32;        # wait at most this long for a warm VM; 0 = pool default
  leaseMs @4 :UInt32;           # lifetime: unless released by then, the pool destroys the VM this
                                # long after the lease (a lessee that died never releases it);
                                # 0 = the pool's --lease-ttl-ms; above --max-lease-ttl-ms is
                                # refused with badRequest (never silently shortened)
}

struct Lease {
  version @0 :UInt16;
  vmId @1 :Text;                # unique per VM, never reused
  tier @2 :Common.SizeTier;
  resources @3 :Common.Resources;
  channelKind @4 :ChannelKind;
  channelPath @5 :Text;         # socket path for the guest protocol
  vsockPort @6 :UInt32;         # hybridVsock: the port to CONNECT to
  backend @7 :Text;             # "qemu" | "firecracker"
  accel @8 :Text;               # "kvm" | "tcg"
  restored @9 :Bool;            # came from a snapshot (and was reseeded)
  bootMs @10 :Float64;          # boot or restore time until the agent said Hello
  waitMs @11 :Float64;          # how long this lease waited for a warm VM
  leaseMs @12 :UInt32;          # the lifetime granted (LeaseRequest.leaseMs, or the default)
}

struct ReleaseRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  vmId @2 :Text;
  reason @3 :Text;              # why (logged and published)
}

struct ReleaseReply {
  version @0 :UInt16;
  vmId @1 :Text;
}

struct TierStatus {
  tier @0 :Common.SizeTier;
  warm @1 :UInt32;              # booted, idle, ready to lease
  active @2 :UInt32;            # leased
  booting @3 :UInt32;
  warmTarget @4 :UInt32;        # --warm
  max @5 :UInt32;               # --max (warm + active + booting never exceeds it)
  waiting @6 :UInt32;           # lease requests queued
  templateError @7 :Text;       # snapshot mode: why the tier has no template ("" = it has one);
                                # its leases get tierUnavailable while the pool retries
  templateFailures @8 :UInt32;  # consecutive template failures of the tier
}

struct PoolStatusRequest {
  version @0 :UInt16;
}

struct PoolStatus {
  version @0 :UInt16;
  backend @1 :Text;
  accel @2 :Text;
  tiers @3 :List(TierStatus);
}
