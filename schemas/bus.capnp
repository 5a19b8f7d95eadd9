@0x8985918b464c8769;
# bus.capnp — the header frame of every message on the ZeroMQ bus, and the broker's own services.
#
# Frame layout (services/common/frames.h):
#   [routing frames...][empty][Header][body]
# The body's type is fixed by (Header.service, Header.kind); `error` bodies are common.Error.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Events = import "events.capnp";

struct Header {
  version @0 :UInt16;     # common.schemaVersion
  kind @1 :Kind;          # what this message is
  service @2 :Text;       # request/ready: the service name ("exec", "llm", "task", "nv.status")
  requestId @3 :UInt64;   # chosen by the requester, echoed in every partial/reply/error for it
  traceId @4 :Text;       # UUID v7 of the task this belongs to; empty when none
  deadlineMs @5 :UInt32;  # request: how long the requester waits; 0 = the broker's default
  capacity @6 :UInt32;    # ready/heartbeat: how many more requests this worker takes right now
  pid @7 :UInt32;         # ready: the worker's process id
  instance @8 :Text;      # ready: a name unique to this worker process (host/service/pid)
  intervalMs @9 :UInt32;  # heartbeat: the sender's heartbeat interval in ms; a peer silent for
                          # `liveness` (3) such intervals is presumed gone. 0 = not stated.
  running @10 :List(UInt64);
                          # ready: request ids this worker is still running from before it
                          # reconnected (the broker adopts those it knows, cancels the others);
                          # at most 65536 entries

  enum Kind {
    unset @0;
    ready @1;       # worker -> broker: register `service` with `capacity`
    heartbeat @2;   # both ways: still alive (worker's carries its current capacity). Also
                    # client <-> broker while the client has requests outstanding: the broker
                    # cancels the requests of a client silent for `liveness` intervals, the
                    # client fails them with brokerLost when the broker falls silent
    request @3;     # client -> broker -> worker
    partial @4;     # worker -> broker -> client: one streamed piece, more follow
    reply @5;       # worker -> broker -> client: the final answer
    error @6;       # anyone -> requester: the final answer is a common.Error
    disconnect @7;  # worker -> broker: leaving (drained); broker -> worker: re-register
    cancel @8;      # client -> broker -> worker: the requester no longer wants the answer
  }
}

struct ServiceInfo {
  # One registered worker, as shown by `nv status`.
  service @0 :Text;
  instance @1 :Text;
  pid @2 :UInt32;
  uptimeMs @3 :UInt64;        # since it sent READY
  capacity @4 :UInt32;        # free capacity at its last heartbeat
  inFlight @5 :UInt32;        # requests the broker has handed it and not seen answered
  lastSeenMsAgo @6 :UInt64;   # since its last message
}

struct StatusRequest {
  # Body of a request to the broker's built-in service "nv.status".
  version @0 :UInt16;
}

struct StatusReply {
  version @0 :UInt16;
  orchestratorPid @1 :UInt32;
  orchestratorUptimeMs @2 :UInt64;
  services @3 :List(ServiceInfo);
  queued @4 :UInt32;          # requests waiting for a worker
  endpoints @5 :List(Text);   # the broker's bound endpoints (workers, clients, events)
}

struct HistoryRequest {
  # Body of a request to "nv.events": the events the orchestrator has kept since it started.
  version @0 :UInt16;
  topicPrefix @1 :Text;       # only events whose topic starts with this ("" = all)
  limit @2 :UInt32;           # at most this many of the newest; 0 = all kept
}

struct HistoryReply {
  version @0 :UInt16;
  events @1 :List(Events.Event);
  dropped @2 :UInt64;         # events that fell out of the history ring since start
}
