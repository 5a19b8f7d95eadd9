@0x93532d31b0c4ca5e;
# guest.capnp — the host <-> guest agent protocol (design.md §6).
#
# One byte stream (virtio-serial port or vsock). Each frame: a 4-byte little-endian length N,
# then N bytes of one Cap'n Proto message (flat array, unpacked). Both sides reject N == 0 or
# N > their cap (host: 1 MiB per guest frame; guest: 64 MiB per host frame) and close the stream.
# The guest speaks first with `hello` on every new connection (and again before the pong to a
# `ping` of nonce 0); the host then sends requests, one exec at a time.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Exec = import "exec.capnp";

struct GuestExec {
  id @0 :UInt32;                # chosen by the host; echoed in chunks and the result
  language @1 :Common.Language;
  code @2 :Text;
  stdin @3 :Data;
  env @4 :List(Common.EnvVar);
  timeoutMs @5 :UInt32;         # the agent kills the process group when it passes
  outputCapBytes @6 :UInt32;    # stdout+stderr bytes sent at most; the rest is counted, not sent
  traceId @7 :Text;             # exported as NEUROVISOR_TRACE_ID
  cwd @8 :Text;                 # "" = /tmp
  tailBytes @9 :UInt32;         # per stream: the last bytes kept beyond outputCapBytes and sent
                                # in GuestResult.stdoutTail/stderrTail; 0 = 64 KiB, at most
                                # 256 KiB (kMaxTailBytes: both tails fit one guest frame)
}

struct Reseed {
  entropy @0 :Data;             # mixed into the guest RNG (RNDADDENTROPY) before anything runs
  vmId @1 :Text;                # the VM's new identity (hostname, /run/nv/vm-id)
  unixTimeNs @2 :Int64;         # the host clock, for restored VMs whose clock is the snapshot's
}

struct HostMessage {
  version @0 :UInt16;
  union {
    exec @1 :GuestExec;
    putFile @2 :Exec.FilePut;
    getFile @3 :Text;           # path
    ping @4 :UInt64;            # nonce, echoed in pong; 0 = greeting of a newly connected host:
                                # the agent answers Hello, then the pong (a virtio-serial agent
                                # cannot always see a quick disconnect + reconnect)
    shutdown @5 :Void;          # sync and power off
    reseed @6 :Reseed;
  }
}

struct Hello {
  agentVersion @0 :Text;
  languages @1 :List(Common.Language);  # those whose interpreter exists in the image
  bootId @2 :Text;              # /proc/sys/kernel/random/boot_id
  uptimeMs @3 :UInt64;
}

struct Chunk {
  execId @0 :UInt32;
  stream @1 :Exec.Stream;       # stdout | stderr
  data @2 :Data;                # at most 64 KiB
}

struct GuestResult {
  execId @0 :UInt32;
  exitCode @1 :Int32;           # -1 when killed by a signal
  signal @2 :Int32;
  durationMs @3 :Float64;
  timedOut @4 :Bool;
  truncated @5 :Bool;
  stdoutBytes @6 :UInt64;       # written by the program in all (sent or not)
  stderrBytes @7 :UInt64;
  error @8 :Text;               # the program could not be started (e.g. interpreter missing)
  stdoutTail @9 :Data;          # the last bytes (at most GuestExec.tailBytes) of stdout that
                                # were not sent as chunks because the output cap was reached;
                                # stdoutBytes - (chunk bytes) - |stdoutTail| were dropped between
  stderrTail @10 :Data;         # the same for stderr
}

struct Identity {
  vmId @0 :Text;
  bootId @1 :Text;
}

struct GuestMessage {
  version @0 :UInt16;
  union {
    hello @1 :Hello;
    chunk @2 :Chunk;
    result @3 :GuestResult;
    pong @4 :UInt64;
    fileData @5 :Exec.FileData; # answer to getFile, and to putFile (found = written)
    error @6 :Common.Error;     # a request the agent could not parse or serve
    reseeded @7 :Identity;      # answer to reseed
  }
}
