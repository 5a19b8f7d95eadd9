@0xd11566ddb3375e8f;
# events.capnp — the one event stream that audit logs and metrics are built from.
#
# Publishers PUSH [topic][Event] to the orchestrator, which keeps a history ring and fans the
# same two frames out on its XPUB socket; subscribers filter by topic prefix ("vm.", "security.").
# Topics: service.started service.stopping vm.booted vm.acquired vm.released vm.failed vm.stats
#   pool.status exec.started exec.finished llm.call task.started task.iteration task.finished
#   security.alert sentinel.status sentinel.syscalls broker.status sandbox.* (SandboxEvent)

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Vm = import "vm.capnp";

enum Severity {
  unset @0;
  info @1;
  warning @2;
  alert @3;         # a security layer blocked or saw something
}

struct ServiceStarted {
  version @0 :Text;             # NeuroVisor version of the binary
  endpoints @1 :List(Text);     # what it bound or connected to
  privileges @2 :Text;          # uid, capabilities kept, seccomp state after start-up
}

struct VmBooted {
  vmId @0 :Text;
  tier @1 :Common.SizeTier;
  backend @2 :Text;             # qemu | firecracker
  accel @3 :Text;               # kvm | tcg
  bootMs @4 :Float64;           # start of the VMM process until the agent's Hello
  restored @5 :Bool;            # from a snapshot
  vmmPid @6 :UInt32;
  cgroupPath @7 :Text;          # the VM's cgroup2 directory (for egress hooks), "" if none
}

struct VmAcquired {
  vmId @0 :Text;
  tier @1 :Common.SizeTier;
  waitMs @2 :Float64;           # how long the lease waited
}

struct VmReleased {
  vmId @0 :Text;
  tier @1 :Common.SizeTier;
  reason @2 :Text;
  leasedMs @3 :Float64;
}

struct VmFailed {
  vmId @0 :Text;
  tier @1 :Common.SizeTier;
  reason @2 :Text;              # "vmm exited: signal 9", "boot timed out", "security alert", ...
  vmmPid @3 :UInt32;
}

struct VmStats {
  vmId @0 :Text;
  memoryBytes @1 :UInt64;       # cgroup memory usage
  cpuThrottledPeriods @2 :UInt64;   # CFS periods in which the cgroup was throttled, since it was
                                    # made (cpu.stat nr_throttled, v1 and v2)
  cpuUsageUs @3 :UInt64;
  pids @4 :UInt32;
  cpuThrottledUs @5 :UInt64;    # time the cgroup's tasks were throttled, microseconds, since it
                                # was made (v2 cpu.stat throttled_usec; v1 throttled_time / 1000)
}

struct PoolStatusEvent {
  tiers @0 :List(Vm.TierStatus);
}

struct ExecStarted {
  language @0 :Common.Language;
  vmId @1 :Text;
}

struct ExecFinished {
  language @0 :Common.Language;
  vmId @1 :Text;
  durationMs @2 :Float64;       # executor wall time for the request
  exitCode @3 :Int32;
  timedOut @4 :Bool;
  truncated @5 :Bool;
  outputBytes @6 :UInt64;
  status @7 :Text;              # ok | error | timeout | killed
}

struct LlmCall {
  model @0 :Text;
  api @1 :Text;                 # ollama | openai
  durationMs @2 :Float64;
  promptTokens @3 :UInt32;
  completionTokens @4 :UInt32;
  loadMs @5 :Float64;
  outcome @6 :Text;             # ok, or the common.Error code name
  firstTokenMs @7 :Float64;     # streamed calls: ms until the first streamed byte; 0 = none
}

struct TaskStarted {
  model @0 :Text;
  promptChars @1 :UInt32;
}

struct TaskIteration {
  iteration @0 :UInt32;
  toolCalls @1 :UInt32;         # tool calls the model made in this iteration
}

struct TaskFinished {
  status @0 :Text;              # TaskStatus name
  iterations @1 :UInt32;
  toolCalls @2 :UInt32;
  durationMs @3 :Float64;
}

struct SecurityAlert {
  kind @0 :Text;                # egress_denied | vmm_exec | lsm_denied | rate_limited | ...
  vmId @1 :Text;                # "" when not tied to a VM
  pid @2 :UInt32;
  detail @3 :Text;              # e.g. "connect 127.0.0.2:80 denied by policy"
  action @4 :Text;              # what was done: denied | vm_destroyed | logged
}

struct ProgramStatus {
  name @0 :Text;                # e.g. "sys_enter_count", "lsm_file_open"
  loaded @1 :Bool;
  errno @2 :Int32;              # why not, when not loaded
  detail @3 :Text;
}

struct SentinelStatus {
  programs @0 :List(ProgramStatus);
}

struct SyscallCount {
  vmId @0 :Text;
  count @1 :UInt64;             # total since the VM was first seen
}

struct SyscallCounts {
  entries @0 :List(SyscallCount);
}

struct BrokerStatus {
  service @0 :Text;
  workers @1 :UInt32;
  inFlight @2 :UInt32;
  queued @3 :UInt32;
}

struct SandboxEvent {
  # Topics sandbox.created sandbox.destroyed sandbox.reaped sandbox.forked sandbox.paused
  # sandbox.resumed sandbox.snapshot: one per change of a sandbox that lives (sandbox.capnp).
  sandboxId @0 :Text;
  owner @1 :Text;
  vmId @2 :Text;
  reason @3 :Text;              # reaped: "lifetime ended" | "idle for <n> ms" | "vm lost: <why>";
                                # destroyed: who asked; snapshot: the snapshot's name
  parentId @4 :Text;            # forked: the sandbox it was forked from
  durationMs @5 :Float64;       # the operation's wall time (create, fork, pause, resume)
  tier @6 :Common.SizeTier;
}

struct EgressDenied {
  # Topic security.egress_denied: a guest's connection or DNS lookup its policy refused.
  sandboxId @0 :Text;
  vmId @1 :Text;
  destination @2 :Text;         # "198.51.100.9:80/tcp" or, for a lookup, the queried name
  rule @3 :Text;                # what refused it: "not allowed", "always-deny 169.254.0.0/16",
                                # "nxdomain: not on the allow list", "connection limit"
  count @4 :UInt64;             # denials folded into this event (rate-limited publishing)
}

struct Event {
  version @0 :UInt16;
  id @1 :Text;                  # UUID v7, unique per event
  topic @2 :Text;               # dotted name, also sent as the first frame
  timeNs @3 :Int64;             # unix time in nanoseconds at the publisher
  service @4 :Text;             # publishing service
  instance @5 :Text;            # publishing process (host/service/pid)
  pid @6 :UInt32;
  traceId @7 :Text;             # the task this belongs to, "" if none
  severity @8 :Severity;
  union {
    none @9 :Void;
    serviceStarted @10 :ServiceStarted;
    serviceStopping @11 :Void;
    vmBooted @12 :VmBooted;
    vmAcquired @13 :VmAcquired;
    vmReleased @14 :VmReleased;
    vmFailed @15 :VmFailed;
    vmStats @16 :VmStats;
    poolStatus @17 :PoolStatusEvent;
    execStarted @18 :ExecStarted;
    execFinished @19 :ExecFinished;
    llmCall @20 :LlmCall;
    taskStarted @21 :TaskStarted;
    taskIteration @22 :TaskIteration;
    taskFinished @23 :TaskFinished;
    securityAlert @24 :SecurityAlert;
    sentinelStatus @25 :SentinelStatus;
    syscallCounts @26 :SyscallCounts;
    brokerStatus @27 :BrokerStatus;
    sandbox @28 :SandboxEvent;
    egressDenied @30 :EgressDenied;   # (ordinal after `sender` @29: added later)
  }
  sender @29 :Text;             # the publisher's identity as the orchestrator verified it (set by
                                # the orchestrator, whatever the publisher wrote): "uid:<n>" for
                                # an ipc:// peer (its SO_PEERCRED uid, via ZAP), "key:<z85>" for a
                                # tcp:// CURVE peer (its public key), "inproc" for one inside the
                                # orchestrator's process, "orchestrator" for the hub's own events;
                                # service/instance above are the publisher's claim
}
