@0xc56292559d0d0820;
# exec.capnp — the "exec" service of nv-sandbox-executor: run code once in a fresh microVM.
# Stream: ExecChunk partials (a `status` chunk "started" first, then output), then one ExecResult
# reply (or a common.Error). The VM is destroyed after every request.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";

struct FilePut {
  path @0 :Text;                # absolute path inside the guest (under /tmp or /work)
  data @1 :Data;
  mode @2 :UInt32;              # permission bits; 0 = 0644
}

struct FileData {
  path @0 :Text;
  data @1 :Data;
  found @2 :Bool;               # false: the file did not exist or could not be read (see error)
  error @3 :Text;
}

struct ExecRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  language @2 :Common.Language;
  code @3 :Text;
  stdin @4 :Data;
  env @5 :List(Common.EnvVar);
  putFiles @6 :List(FilePut);   # written before the program starts
  getFiles @7 :List(Text);      # read back after it ends
  timeoutMs @8 :UInt32;         # 0 = executor default
  outputCapBytes @9 :UInt32;    # stdout+stderr bytes kept from the start (the head);
                                # 0 = executor default. The end is kept too: tailBytes
  tier @10 :Common.SizeTier;    # unset = small
  tailBytes @11 :UInt32;        # per stream: the last bytes kept past outputCapBytes (see
                                # ExecResult.stdoutTail); 0 = 64 KiB, at most 256 KiB
}

enum Stream {
  unset @0;
  stdout @1;
  stderr @2;
  status @3;                    # executor status text ("started vm=<id>")
}

struct ExecChunk {
  version @0 :UInt16;
  traceId @1 :Text;
  stream @2 :Stream;
  data @3 :Data;
  seq @4 :UInt32;
}

struct ExecResult {
  version @0 :UInt16;
  traceId @1 :Text;
  exitCode @2 :Int32;           # -1 when killed by a signal or never started
  signal @3 :Int32;             # the signal that ended it, 0 if none
  durationMs @4 :Float64;       # run time measured by the guest agent
  wallMs @5 :Float64;           # request wall time measured by the executor
  timedOut @6 :Bool;            # the timeout was hit (by the guest, or the host deadline)
  truncated @7 :Bool;           # output went past outputCapBytes and was cut
  stdout @8 :Data;              # kept stdout (at most the cap)
  stderr @9 :Data;              # kept stderr (at most the cap)
  stdoutBytes @10 :UInt64;      # bytes the program wrote to stdout in all
  stderrBytes @11 :UInt64;
  files @12 :List(FileData);    # the getFiles asked for
  vmId @13 :Text;
  hostKilled @14 :Bool;         # the executor destroyed the VM (deadline, rate limit, bad frame)
  note @15 :Text;               # why, when hostKilled
  stdoutTail @16 :Data;         # when stdout went past what `stdout` holds: its last bytes (at
                                # most tailBytes). The program wrote stdoutBytes in all; the
                                # stdoutBytes - |stdout| - |stdoutTail| bytes between the two were
                                # left out. Empty when nothing was left out.
  stderrTail @17 :Data;         # the same for stderr (its end is kept whatever stdout printed)
}
