@0xc62741271f4e2163;
# common.capnp — types shared by every NeuroVisor message.
#
# Every top-level message in schemas/ starts with `version @0 :UInt16`, which the sender sets to
# `schemaVersion` and every receiver checks (services/common/validate.h) before reading further.
# Every enum starts with `unset @0` so a field that was never set is told apart from a real value.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");

const schemaVersion :UInt16 = 1;
# Bumped on any incompatible change; receivers answer other versions with `unsupportedVersion`.

enum Language {
  # Languages the guest agent can run.
  unset @0;
  python @1;       # /usr/bin/python3 -c CODE
  bash @2;         # /bin/bash -c CODE
  sh @3;           # /bin/sh -c CODE
  javascript @4;   # /usr/bin/node -e CODE
}

enum SizeTier {
  # VM size tiers of the pool (design.md §5).
  unset @0;
  small @1;        # 1 vCPU, 256 MiB
  medium @2;       # 2 vCPU, 512 MiB
  large @3;        # 4 vCPU, 1024 MiB
}

struct Resources {
  # What one VM gets.
  tier @0 :SizeTier;
  vcpus @1 :UInt32;
  memoryMib @2 :UInt32;
}

struct EnvVar {
  # One environment variable for a sandboxed program.
  name @0 :Text;
  value @1 :Text;
}

struct Error {
  # The typed error every service answers bad input and failures with.
  code @0 :Code;
  message @1 :Text;     # what happened and, where possible, what to do about it
  retryable @2 :Bool;   # true when the same request may succeed later unchanged
  service @3 :Text;     # the service that produced the error

  enum Code {
    unset @0;
    badRequest @1;          # a field is missing or out of range
    malformedMessage @2;    # the frames are not a valid NeuroVisor message
    oversizedFrame @3;      # a frame exceeds the receiver's size cap
    unsupportedVersion @4;  # the header or body carries another schema version
    unknownService @5;      # no such service is known to the broker
    noWorker @6;            # the service exists but no worker took the request before its deadline
    workerLost @7;          # the worker handling the request stopped answering heartbeats
    timedOut @8;            # the request's deadline passed
    cancelled @9;           # the caller went away or cancelled
    internal @10;           # a bug or unexpected failure inside the service
    overloaded @11;         # a queue is full; try again later
    unknownTier @12;        # the size tier is not configured
    poolExhausted @13;      # no VM became free before the lease deadline
    unknownLease @14;       # the VM id is not leased (never was, or already released)
    vmFailed @15;           # the VM or its VMM died or misbehaved
    guestProtocol @16;      # the guest agent broke the protocol (bad frame, rate limit, ...)
    llmUnreachable @17;     # the model server could not be reached
    modelNotFound @18;      # the model server does not have the requested model
    llmBadResponse @19;     # the model server answered something we cannot use
    rateLimited @20;        # a token bucket refused the request
    llmTimedOut @21;        # the model server did not answer in time
    unauthorized @22;       # credentials missing or refused
    shuttingDown @23;       # the service is draining and takes no new work
    llmReplyCut @24;        # the model's reply was empty or cut at its token limit (finish_reason
                            # / done_reason "length"), and again when asked once more
    brokerLost @25;         # the orchestrator stopped answering heartbeats (killed or stalled)
    tierUnavailable @26;    # the size tier cannot make VMs now (its snapshot template failed;
                            # retried with backoff, other tiers serve); retryable
    egressUnenforced @27;   # no VM has its egress enforcement attached (fail-closed leasing:
                            # the sentinel is down or could not attach); retryable
    unknownSandbox @28;     # no such sandbox for this owner (another owner's id reads the same)
    sandboxLimit @29;       # the owner's limit of live sandboxes or memory is reached
    sandboxState @30;       # the operation does not fit the sandbox's state (paused, starting)
    unknownSnapshot @31;    # no such snapshot for this owner
    notFound @32;           # a file, directory or process inside the sandbox does not exist
    mountRefused @33;       # a host directory outside every --mount-root (the message names the
                            # rule and the roots); nothing was leased or copied
    mountQuota @34;         # a mount's byte or file quota would be exceeded
    egressDenied @35;       # a network policy entry the operator's always-deny list forbids
  }
  queueLength @4 :UInt32;       # overloaded: requests waiting ahead of this one
  estimatedWaitMs @5 :UInt32;   # overloaded: the broker's estimate of the wait for a worker
}
