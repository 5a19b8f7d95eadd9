@0xb8f0c4d2a6e91735;
# sandbox.capnp — the "sandbox" service of nv-sandbox-executor: sandboxes that live.
#
# A sandbox is one microVM leased for a lifetime (not one request): any number of execs, file
# operations and process calls reach the same guest, so files, background processes and named
# code contexts persist between calls. It can be snapshotted (named, on disk), forked (N copies of
# its running state, each with fresh entropy and identity), paused (state to disk, RAM freed) and
# resumed, and is destroyed on request, at its lifetime's end, or when idle too long.
#
# Routing: every executor registers the service "sandbox" (create, list, snapshot listing) and
# "sandbox.<executor>" where <executor> is the executor's name; a sandbox id is
# "sbx-<executor>-<random>", and every call on an existing sandbox goes to "sandbox.<executor>"
# (nv::sandbox_service_for(id) in services/common/sandbox_route.h). So a sandbox is served by the
# executor that made it, however many executors serve the bus.
#
# Owner: each request names its owner (nv CLI: "uid:<n>", nv-api: "tenant:<id>"). A sandbox or
# snapshot of another owner is answered exactly as one that does not exist (unknownSandbox /
# unknownSnapshot), never "forbidden": ids of others are not confirmed.
#
# Streaming: `exec` streams Exec.ExecChunk partials (status "started", then stdout/stderr) before
# its reply, as the "exec" service does. Every other operation answers with one reply.
# Errors (common.Error): badRequest (a field out of range, a path outside the writable roots),
# unknownSandbox, unknownSnapshot, sandboxLimit (per-owner limits), sandboxState (the operation
# does not fit the state, e.g. exec on a paused sandbox), notFound (a file or process inside the
# sandbox), vmFailed (the VM died: the sandbox is reaped), guestProtocol, timedOut.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Exec = import "exec.capnp";

enum SandboxState {
  unset @0;
  starting @1;      # leasing or restoring its VM
  running @2;       # its VM runs; calls are served
  paused @3;        # its state is on disk and its VMM is gone (RAM freed); `resume` to use it
  destroyed @4;     # gone (destroy, reaped, or its VM was lost); kept in `get` answers briefly
}

struct Label {
  key @0 :Text;                 # 1..63 bytes [a-zA-Z0-9._-]
  value @1 :Text;               # at most 255 bytes
}

struct SandboxSpec {
  tier @0 :Common.SizeTier;     # unset = small
  image @1 :Text;               # "" or "default" (the only image today); others: badRequest
  env @2 :List(Common.EnvVar);  # every exec starts with these (an exec's own env wins)
  cwd @3 :Text;                 # default working directory of execs; "" = /home/agent
  lifetimeMs @4 :UInt32;        # destroyed this long after creation; 0 = the executor's
                                # --sandbox-lifetime-ms (1 h); above --max-sandbox-lifetime-ms
                                # (24 h) is badRequest, never silently shortened
  idleTimeoutMs @5 :UInt32;     # destroyed after this long without a call; 0 = the executor's
                                # --sandbox-idle-ms (10 min); keepalive counts as a call
  labels @6 :List(Label);       # at most 16; shown by list/get, filterable by list
  fromSnapshot @7 :Text;        # "" = a fresh warm VM; else a snapshot name of the same owner
  mounts @8 :List(Mount);       # host directories copied in at creation (at most 8); see Mount
  network @9 :NetworkPolicy;    # unset = mode none: no network device is reachable at all
  inference @10 :InferencePolicy;  # the in-guest model endpoint; unset = off
}

# Host directories (issue 15). A mount is COPIED IN when the sandbox is created and COPIED OUT
# (read-write mounts only) at an explicit `sync` and when the sandbox ends by destroy: the guest
# never touches a host file system, so forks, snapshots and pause carry a mount's content as they
# carry any other guest file. Host-side reads and writes are done by a copier process confined by
# Landlock to exactly the mounted host paths; it never follows a symlink, never writes through
# one, writes every file to a temp file in the same directory and renames it (a crash leaves no
# half-written file), and skips (and reports) symlinks, device nodes, fifos, sockets and files
# with more than one hard link. Errors: mountRefused (outside every --mount-root of the executor,
# before any VM is leased), badRequest (shapes), mountQuota (a sync would exceed a quota).
struct Mount {
  hostPath @0 :Text;            # absolute host directory; must resolve (symlinks followed once,
                                # at validation) to a directory under one of the executor's
                                # --mount-root directories, else mountRefused naming the rule
  guestPath @1 :Text;           # absolute, strictly under /home/agent (e.g. /home/agent/proj);
                                # no "..", no overlap with another mount
  readOnly @2 :Bool;            # true: in the guest every write, chmod, rename, unlink fails
                                # (EROFS: a read-only bind mount)
  quotaBytes @3 :UInt64;        # read-write: bytes the sandbox may hold in the mount beyond what
                                # was copied in; 0 = the executor's --mount-quota-bytes (256 MiB)
  quotaFiles @4 :UInt32;        # read-write: files/directories beyond those copied in;
                                # 0 = the executor's --mount-quota-files (10,000)
}

struct MountSync {
  guestPath @0 :Text;
  hostPath @1 :Text;
  filesWritten @2 :UInt32;      # new or changed in the guest since the copy-in, written to host
  bytesWritten @3 :UInt64;
  filesRemoved @4 :UInt32;      # removed in the guest and unchanged on the host since copy-in
  skipped @5 :List(Text);       # "<path>: <why>" (symlink, device node, hard link, conflict:
                                # changed on both sides — the host's copy is kept), at most 100
}

# Guest networking (issue 16). Enforcement is on the host, outside the guest's reach.
enum NetworkMode {
  none @0;                      # no route at all (the default)
  allow @1;                     # only the `allow` entries, minus the operator's always-deny list
}

struct NetworkPolicy {
  mode @0 :NetworkMode;
  allow @1 :List(Text);         # at most 64 entries, each one of:
                                #   CIDR with optional port: "198.51.100.0/24", "198.51.100.7:443",
                                #   "[2001:db8::1]:443", "2001:db8::/32"
                                #   a domain (RFC 1035 names): "example.org", "*.example.org"
                                # link-local/metadata (169.254.0.0/16, fd00:ec2::254), the host's
                                # own addresses and private ranges (unless the operator allows
                                # them) are refused whatever is listed here
  maxConnections @2 :UInt32;    # concurrent TCP connections; 0 = the pool's default (64)
  bandwidthBytesPerS @3 :UInt64;  # egress token bucket; 0 = the pool's default (10 MB/s)
}

struct NetworkInfo {
  mode @0 :NetworkMode;
  allow @1 :List(Text);
  mac @2 :Text;                 # "02:xx:xx:xx:xx:xx" (locally administered), distinct per VM
  ipv4 @3 :Text;                # the guest's address, "10.x.y.z/30"
  gateway @4 :Text;             # the host side's address; also the guest's DNS resolver
}

# The inference bridge (issue 16): inside the guest, OLLAMA_HOST=http://127.0.0.1:11434 and
# OPENAI_BASE_URL=http://127.0.0.1:11434/v1 reach nv-llm-gateway over the guest channel (no
# network device involved). Over budget → HTTP 429, a model not allowed → HTTP 403.
struct InferencePolicy {
  enabled @0 :Bool;
  models @1 :List(Text);        # allowed model names (at most 16); empty = the gateway's default
  tokenBudget @2 :UInt64;       # prompt + completion tokens over the sandbox's life;
                                # 0 = the executor's --inference-token-budget (100,000)
}

struct SandboxInfo {
  sandboxId @0 :Text;
  owner @1 :Text;
  state @2 :SandboxState;
  tier @3 :Common.SizeTier;
  resources @4 :Common.Resources;
  vmId @5 :Text;                # "" while paused
  createdUnixMs @6 :Int64;
  deadlineUnixMs @7 :Int64;     # end of the lifetime
  idleDeadlineUnixMs @8 :Int64; # last call + idle timeout
  lastActiveUnixMs @9 :Int64;
  labels @10 :List(Label);
  parentId @11 :Text;           # the sandbox it was forked from, "" if none
  fromSnapshot @12 :Text;       # the snapshot it was created from, "" if none
  cwd @13 :Text;
  env @14 :List(Common.EnvVar);
  endReason @15 :Text;          # destroyed: "destroyed by owner", "lifetime ended",
                                # "idle for 600000 ms", "vm lost: <why>"
  mounts @16 :List(Mount);
  network @17 :NetworkInfo;     # mode none: only `mode` is set
  inference @18 :InferencePolicy;
  inferenceTokensUsed @19 :UInt64;
}

struct SandboxExec {
  language @0 :Common.Language; # unset = bash
  code @1 :Text;
  stdin @2 :Data;
  env @3 :List(Common.EnvVar);  # on top of the sandbox's env
  cwd @4 :Text;                 # "" = the sandbox's cwd
  timeoutMs @5 :UInt32;         # 0 = executor default; the program's process group is killed at
                                # the timeout, background processes it started are not
  outputCapBytes @6 :UInt32;    # as Exec.ExecRequest
  tailBytes @7 :UInt32;         # as Exec.ExecRequest
  context @8 :Text;             # "" = a new process per exec; else the name (1..63 bytes
                                # [a-zA-Z0-9._-]) of a persistent interpreter (python or
                                # javascript only) in which variables and imports survive
                                # between execs, as in a notebook; made on first use
  background @9 :Bool;          # start the program and answer at once (exitCode -1, no output);
                                # it keeps running and is listed by `processes`
}

struct ContextRestart {
  context @0 :Text;
  language @1 :Common.Language; # python | javascript
}

struct FileWrite {
  path @0 :Text;                # absolute, under the guest's writable roots (/home/agent, /tmp)
  data @1 :Data;                # at most 32 MiB per request; larger files: append in pieces
  mode @2 :UInt32;              # permission bits; 0 = 0644
  append @3 :Bool;              # add to the end of an existing file instead of replacing it;
                                # a replacing write is atomic (temp file + rename in the guest)
}

struct FileRead {
  path @0 :Text;
  offset @1 :UInt64;            # bytes from the start
  length @2 :UInt64;            # 0 = to the end; at most 32 MiB per request (page with offset)
}

struct FileReadReply {
  path @0 :Text;
  offset @1 :UInt64;
  data @2 :Data;
  size @3 :UInt64;              # the file's whole size
  eof @4 :Bool;                 # offset + |data| == size
}

enum FileType {
  unset @0;
  file @1;
  directory @2;
  symlink @3;
  other @4;                     # fifo, socket, device
}

struct FileEntry {
  path @0 :Text;                # absolute
  type @1 :FileType;
  size @2 :UInt64;              # bytes
  mode @3 :UInt32;              # permission bits (st_mode & 07777)
  mtimeUnixMs @4 :Int64;
  linkTarget @5 :Text;          # symlinks: where it points (not followed)
}

struct FilePath {
  path @0 :Text;
  recursive @1 :Bool;           # list: walk subdirectories (at most 10,000 entries);
                                # remove: a directory and everything in it; mkdir: parents too
}

struct ProcessInfo {
  pid @0 :Int32;                # inside the guest
  ppid @1 :Int32;
  command @2 :Text;             # /proc/<pid>/cmdline, NULs as spaces, at most 4 KiB
  state @3 :Text;               # /proc/<pid>/stat state letter: R S D Z T ...
  rssBytes @4 :UInt64;
  startedUnixMs @5 :Int64;
  context @6 :Text;             # the code context it serves, "" if none
}

struct ProcessSignal {
  pid @0 :Int32;                # a process listed by `processes` (the agent's own: badRequest)
  signal @1 :Int32;             # 1..64 (Linux numbers: 9 = SIGKILL, 15 = SIGTERM)
}

struct Keepalive {
  extendMs @0 :UInt32;          # also move the lifetime's end to now + extendMs (bounded by
                                # --max-sandbox-lifetime-ms from creation); 0 = only touch
}

struct SnapshotRequest {
  name @0 :Text;                # 1..63 bytes [a-zA-Z0-9._-], unique per owner
}

struct SnapshotInfo {
  name @0 :Text;
  owner @1 :Text;
  tier @2 :Common.SizeTier;
  sourceSandboxId @3 :Text;
  createdUnixMs @4 :Int64;
  memoryBytes @5 :UInt64;       # the RAM image's bytes on disk
  stateBytes @6 :UInt64;        # the device state's bytes on disk
}

struct ForkRequest {
  count @0 :UInt32;             # 1..16 new sandboxes, each with the parent's files, processes
                                # and contexts as they were at the fork, fresh entropy, a new
                                # vm id and hostname; the parent keeps running
  labels @1 :List(Label);       # given to each fork (the parent's are not copied)
}

struct ListRequest {
  labels @0 :List(Label);       # only sandboxes carrying all of these
  includeDestroyed @1 :Bool;    # also those destroyed in the last 10 minutes
}

struct SandboxRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  owner @2 :Text;               # 1..128 bytes; see the header
  sandboxId @3 :Text;           # every operation but create, list, snapshots, deleteSnapshot
  union {
    create @4 :SandboxSpec;
    get @5 :Void;
    list @6 :ListRequest;
    exec @7 :SandboxExec;
    restartContext @8 :ContextRestart;
    writeFile @9 :FileWrite;
    readFile @10 :FileRead;
    listFiles @11 :FilePath;
    statFile @12 :FilePath;
    removeFile @13 :FilePath;
    makeDir @14 :FilePath;
    processes @15 :Void;
    signal @16 :ProcessSignal;
    keepalive @17 :Keepalive;
    snapshot @18 :SnapshotRequest;
    snapshots @19 :Void;        # the owner's snapshots
    deleteSnapshot @20 :SnapshotRequest;
    fork @21 :ForkRequest;
    pause @22 :Void;
    resume @23 :Void;
    destroy @24 :Void;
    sync @25 :Void;             # copy the read-write mounts out to the host now
  }
}

struct SandboxReply {
  version @0 :UInt16;
  traceId @1 :Text;
  union {
    info @2 :SandboxInfo;       # create get keepalive pause resume destroy
    infos @3 :List(SandboxInfo);  # list fork
    execResult @4 :Exec.ExecResult;
    file @5 :FileReadReply;     # readFile
    entries @6 :List(FileEntry);  # listFiles statFile (one entry) writeFile makeDir (the
                                # path's entry after the change)
    processes @7 :List(ProcessInfo);
    snapshot @8 :SnapshotInfo;
    snapshots @9 :List(SnapshotInfo);
    done @10 :Void;             # restartContext removeFile signal deleteSnapshot
    synced @11 :List(MountSync);  # sync (one per read-write mount)
  }
}
