@0xf45a061a1229c3aa;
# vm.capnp — nv-vm-pool-manager's local service, used by the sandbox-executor on the same host.
# The pool manager binds its own ROUTER (ipc://$NV_RUNTIME_DIR/vm-pool.sock) and speaks the bus
# framing of bus.capnp with services "vm.lease", "vm.release" and "vm.status", and for sandboxes
# that live (sandbox.capnp) "vm.extend", "vm.fork", "vm.snapshot", "vm.snapshots",
# "vm.snapshot.delete", "vm.pause", "vm.resume" and "vm.leases".
#
# Sandbox leases: a lease with `sandbox` set may live up to the pool's --max-sandbox-ttl-ms (not
# --max-lease-ttl-ms) and is recorded, with its paused states and named snapshots, in the pool's
# SQLite registry ($NV_STATE_DIR/pool.sqlite). VMMs die with the pool manager; a restarted pool
# manager answers vm.leases with what survived: paused sandboxes and snapshots (on disk) are
# kept, running ones are reported lost (LeaseState.lost, with the reason) and their remains
# reclaimed.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Sandbox = import "sandbox.capnp";

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
  sandbox @5 :Bool;             # a sandbox lease: bounded by --max-sandbox-ttl-ms, registered
  sandboxId @6 :Text;           # sandbox leases: the sandbox it serves (registry, events)
  owner @7 :Text;               # sandbox leases: the sandbox's owner
  fromSnapshot @8 :Text;        # "" = a warm VM of `tier`; else the name of a snapshot of
                                # `owner` (vm.snapshot): the VM restores its memory and devices
                                # (reseeded); unknownSnapshot if there is none
  network @9 :Sandbox.NetworkPolicy;  # sandbox leases (issue 16): unset or mode none = no route
                                # (the VM's NIC has no peer); allow = a veth to the pool's uplink
                                # under this policy (egressDenied for always-denied entries)
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
  sandboxId @13 :Text;
  state @14 :LeaseState;
  expiresUnixMs @15 :Int64;     # when the pool destroys it unless extended or released
  note @16 :Text;               # lost: why
  network @17 :Sandbox.NetworkInfo;  # the VM's network (mode none: only the mode is set)
  reserved18 @18 :Text;         # unused (capnp ordinals have no gaps); never set
  reserved19 @19 :Text;
  inferencePath @20 :Text;      # the host socket of the guest's `nv.inference` virtio-serial
                                # port (guest.capnp InferenceRequest); "" = the backend has none
}

enum LeaseState {
  unset @0;
  running @1;                   # its VMM runs
  paused @2;                    # its memory and devices are on disk, no VMM (vm.resume)
  lost @3;                      # its VMM died or was left by a previous pool manager; `note` says
                                # why; released at the first vm.release or at expiry
}

struct ExtendRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  vmId @2 :Text;
  leaseMs @3 :UInt32;           # the lease now ends this long from now (bounded as at lease)
}

struct VmForkRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  vmId @2 :Text;                # a running sandbox lease; it keeps running
  count @3 :UInt32;             # 1..16
  leaseMs @4 :UInt32;           # each fork's lifetime
  sandboxIds @5 :List(Text);    # one per fork (registry, events)
}

struct VmForkReply {
  version @0 :UInt16;
  leases @1 :List(Lease);       # `count` new running VMs: the parent's RAM as a sealed template
                                # mapped copy-on-write, reseeded (entropy, clock, id)
  captureMs @2 :Float64;        # time to turn the parent's RAM into a template (parent paused)
  forkMs @3 :Float64;           # the whole request
}

struct VmSnapshotRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  vmId @2 :Text;                # vm.snapshot: a running sandbox lease (it keeps running);
                                # vm.snapshot.delete: ignored
  name @3 :Text;                # 1..63 bytes [a-zA-Z0-9._-], unique per owner
  owner @4 :Text;
}

struct VmSnapshot {
  name @0 :Text;
  owner @1 :Text;
  tier @2 :Common.SizeTier;
  sourceVmId @3 :Text;
  sourceSandboxId @4 :Text;
  createdUnixMs @5 :Int64;
  memoryBytes @6 :UInt64;       # RAM image on disk (sparse: allocated bytes)
  stateBytes @7 :UInt64;        # device state on disk
}

struct VmSnapshotList {
  version @0 :UInt16;
  snapshots @1 :List(VmSnapshot);  # vm.snapshot: one; vm.snapshots: the owner's ("" = all);
                                 # vm.snapshot.delete: the deleted one
}

struct PauseRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  vmId @2 :Text;                # vm.pause: a running sandbox lease; vm.resume: a paused one
  leaseMs @3 :UInt32;           # vm.resume: the lifetime from now; 0 = keep the current expiry
}
# vm.pause and vm.resume answer with the Lease (state paused / running; a resumed VM has a new
# channelPath, the same vmId, its clock set to the host's, and keeps its entropy and identity).

struct LeasesRequest {
  version @0 :UInt16;
  owner @1 :Text;               # "" = all
}

struct LeaseList {
  version @0 :UInt16;
  leases @1 :List(Lease);       # every sandbox lease the pool holds (running, paused, lost)
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
  forkKits @9 :UInt32;          # forks made ahead, ready (0 or 1; --fork-kits): a copy of the
                                # tier's template and a VMM started on it
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
