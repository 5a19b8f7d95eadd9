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
using Sandbox = import "sandbox.capnp";

struct GuestExec {
  id @0 :UInt32;                # chosen by the host; echoed in chunks and the result
  language @1 :Common.Language;
  code @2 :Text;
  stdin @3 :Data;
  env @4 :List(Common.EnvVar);
  timeoutMs @5 :UInt32;         # the agent kills the process group when it passes
  outputCapBytes @6 :UInt32;    # stdout+stderr bytes sent at most; the rest is counted, not sent
  traceId @7 :Text;             # exported as NEUROVISOR_TRACE_ID
  cwd @8 :Text;                 # "" = /home/agent (the run user's home; agent 0.2; was /tmp)
  tailBytes @9 :UInt32;         # per stream: the last bytes kept beyond outputCapBytes and sent
                                # in GuestResult.stdoutTail/stderrTail; 0 = 64 KiB, at most
                                # 256 KiB (kMaxTailBytes: both tails fit one guest frame)
  context @10 :Text;            # sandboxes: "" = a new process; else run `code` in the named
                                # persistent interpreter (python or javascript), made on first
                                # use; its stdout/stderr stream as chunks; timeout kills and
                                # forgets the context
  keepBackground @11 :Bool;     # sandboxes: processes the program leaves behind keep running
                                # when it ends (their output is drained and dropped); false =
                                # the whole process group is killed at the end (one-shot exec)
  background @12 :Bool;         # answer GuestResult at once after the start (exitCode -1) and
                                # let the program run on (implies keepBackground)
}

# Sandbox file and process operations (guest agent 0.2). Paths are absolute and resolved by the
# agent; writes only below its writable roots (/tmp, /home/agent). Each request is answered by
# one GuestMessage (fileChunk for reads, possibly several; entries; processes; ack) or an error
# (Common.Error: notFound, badRequest with the errno text).

struct FileWriteChunk {
  path @0 :Text;
  data @1 :Data;                # at most 4 MiB per frame; the host sends a file as a sequence
  mode @2 :UInt32;              # first chunk: permission bits; 0 = 0644
  first @3 :Bool;               # opens a temp file next to `path` (or, with append, path itself)
  last @4 :Bool;                # closes it and renames the temp file over `path` (atomic)
  append @5 :Bool;
}

struct FileReadRange {
  path @0 :Text;
  offset @1 :UInt64;
  length @2 :UInt64;            # 0 = to the end; the agent answers in fileChunk frames of at most
                                # 512 KiB each, the last with eof or done set
}

struct FileReadChunk {
  path @0 :Text;
  offset @1 :UInt64;            # of this chunk's first byte in the file
  data @2 :Data;
  size @3 :UInt64;              # the file's size when it was opened
  done @4 :Bool;                # the last chunk of this answer
}

enum FileOpKind {
  unset @0;
  stat @1;
  list @2;
  remove @3;
  mkdir @4;
}

struct FileOp {
  kind @0 :FileOpKind;
  path @1 :Text;
  recursive @2 :Bool;           # list: subdirectories too (at most 10,000 entries);
                                # remove: a whole tree; mkdir: parents too
}

struct SignalRequest {
  pid @0 :Int32;
  signal @1 :Int32;
}

struct ContextReset {
  context @0 :Text;
  language @1 :Common.Language;
}

# A host directory's home in the guest (issue 15, sandbox.capnp Mount): the agent makes an empty
# tmpfs at `path` (made with parents when missing; owned by the run user, mode 0755) sized
# size=sizeBytes, nr_inodes=inodes, so the mount's quota is the file system's own size (a write
# past it fails with ENOSPC in the guest). The host then writes the copied-in content with
# writeChunk/fileOp mkdir and, for a read-only mount, sends mountSeal.
struct MountSetup {
  path @0 :Text;                # absolute, strictly below /home/agent, no "."/".." parts
  sizeBytes @1 :UInt64;         # tmpfs size=, bytes (rounded up to pages by the kernel); ≥ 4096
  inodes @2 :UInt64;            # tmpfs nr_inodes=; ≥ 2
}

struct Ack {
  what @0 :Text;                # the request it answers ("write", "remove", "signal", ...)
  entry @1 :Sandbox.FileEntry;  # write, mkdir: the path's entry afterwards
}

struct Reseed {
  entropy @0 :Data;             # mixed into the guest RNG (RNDADDENTROPY) before anything runs
  vmId @1 :Text;                # the VM's new identity (hostname, /run/nv/vm-id)
  unixTimeNs @2 :Int64;         # the host clock, for restored VMs whose clock is the snapshot's
  network @3 :GuestNetwork;     # set: configure eth0 as given (a networked lease or fork)
}

# eth0's configuration for a networked VM (issue 16); the host side enforces the policy.
struct GuestNetwork {
  mac @0 :Text;                 # "02:xx:xx:xx:xx:xx": set with SIOCSIFHWADDR (link down first)
  ipv4 @1 :Text;                # "10.213.0.2/30"
  gateway @2 :Text;             # "10.213.0.1": default route and the only nameserver
}

# The inference bridge (issue 16; sandbox.capnp InferencePolicy). A second virtio-serial port,
# `nv.inference`, carries HTTP requests that programs in the guest make to 127.0.0.1:11434 (the
# Ollama and OpenAI-compatible endpoint) to the host executor, which answers them through the
# "llm" bus service. Same framing as the agent's port (4-byte little-endian length, one message);
# the guest sends GuestMessage.inferenceRequest, the host answers each with one or more
# HostMessage.inferenceResponse frames of the same id (the first carries status and content
# type, the last has `last` set). Requests of different ids may interleave. The agent's port
# carries HostMessage.startInference (answered by ack "inference"): only then does the agent
# start the in-guest listener; without it 127.0.0.1:11434 refuses connections.

struct InferenceRequest {
  id @0 :UInt32;                # chosen by the guest, unique among its open requests
  method @1 :Text;              # "GET" | "POST"
  path @2 :Text;                # e.g. "/api/chat", "/v1/chat/completions" (no query string)
  body @3 :Data;                # the request body as sent (JSON); at most 1 MiB
}

struct InferenceResponse {
  id @0 :UInt32;                # the request's id
  status @1 :UInt16;            # HTTP status (first frame of an id; 0 in the frames after)
  contentType @2 :Text;         # first frame: "application/json", "application/x-ndjson",
                                # "text/event-stream"
  data @3 :Data;                # body bytes (streamed answers: one NDJSON line / SSE event each)
  last @4 :Bool;                # the answer to this id is complete
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
    writeChunk @7 :FileWriteChunk;  # answered by ack (after `last`, or an error at any chunk)
    readRange @8 :FileReadRange;    # answered by fileChunk frames
    fileOp @9 :FileOp;              # answered by entries (stat, list) or ack (remove, mkdir)
    listProcesses @10 :Void;        # answered by processes
    signal @11 :SignalRequest;      # answered by ack
    resetContext @12 :ContextReset; # answered by ack (the interpreter is killed; the next exec
                                    # with that name starts a fresh one)
    mountSetup @13 :MountSetup;     # answered by ack "mountSetup" (issue 15)
    mountSeal @14 :Text;            # guestPath of a mountSetup: remount it read-only (a bind
                                    # remount with MS_RDONLY: every write, chmod, rename, unlink
                                    # fails with EROFS, for root too); answered by ack "mountSeal"
    startInference @15 :Void;       # agent port: start the 127.0.0.1:11434 listener that
                                    # forwards to the nv.inference port; answered by ack
                                    # "inference" (again: ack, the running listener is kept)
    inferenceResponse @16 :InferenceResponse;  # nv.inference port only
    stopInference @17 :Void;        # agent port: end the listener (a sandbox without inference
                                    # restored from a snapshot of one with it); answered by ack
                                    # "inference" (also when none ran)
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
    fileChunk @8 :FileReadChunk;
    entries @9 :List(Sandbox.FileEntry);
    processes @10 :List(Sandbox.ProcessInfo);
    ack @11 :Ack;
    reserved12 @12 :Void;           # unused (capnp ordinals have no gaps); never sent
    reserved13 @13 :Void;           # unused; never sent
    inferenceRequest @14 :InferenceRequest;  # nv.inference port only
  }
}
