# openapi_gen.py — writes services/api/openapi.json (python3 openapi_gen.py > openapi.json).
# Edit here, regenerate, commit both; api_test checks the document against the routes.
import json
E = {"$ref": "#/components/responses/Error"}
def resp(desc, schema=None, ctype="application/json", extra=None):
    r = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    if extra: r["content"].update(extra)
    return r
def errs(*codes):
    return {str(c): E for c in codes}
def op(summary, opid, scope, responses, body=None, params=None, tags=None):
    o = {"summary": summary, "operationId": opid, "responses": responses}
    if tags: o["tags"] = tags
    if scope is None:
        o["security"] = []
    else:
        o["x-scope"] = scope
    if body: o["requestBody"] = body
    if params: o["parameters"] = params
    return o
ref = lambda n: {"$ref": "#/components/schemas/" + n}
jbody = lambda n, req=True: {"required": req, "content": {"application/json": {"schema": ref(n)}}}
idp = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
pathq = {"name": "path", "in": "query", "required": True, "schema": {"type": "string"},
         "description": "absolute path in the guest, under /home/agent or /tmp"}
stream = {"application/x-ndjson": {"schema": ref("StreamEvent")},
          "text/event-stream": {"schema": {"type": "string"}}}
std = errs(400, 401, 403, 404, 429, 500, 502, 503, 504)
P = {}
P["/healthz"] = {"get": op("Liveness: the process serves HTTP", "healthz", None,
                           {"200": resp("alive", {"type": "object"})}, tags=["health"])}
P["/readyz"] = {"get": op("Readiness: an executor is registered and a warm VM exists", "readyz", None,
                          {"200": resp("ready", ref("Readiness")), "503": resp("not ready", ref("Readiness"))},
                          tags=["health"])}
P["/openapi.json"] = {"get": op("This document", "openapi", None, {"200": resp("OpenAPI 3.1", {"type": "object"})},
                                tags=["health"])}
P["/metrics"] = {"get": op("Prometheus metrics of nv-api (requests by route and status)", "metrics", "admin",
                           {"200": resp("text exposition format 0.0.4", {"type": "string"}, "text/plain"), **errs(401, 403)},
                           tags=["health"])}
P["/v1/exec"] = {"post": op("Run code once in a fresh microVM (JSON, or streamed as NDJSON/SSE per Accept)", "exec", "sandbox",
                            {"200": resp("the result, or the event stream", ref("ExecResult"), extra=stream), **std},
                            jbody("OneShotExec"), tags=["exec"])}
P["/v1/tasks"] = {
  "post": op("Submit an agent task; 202 with its id, or its progress streamed (Accept: text/event-stream | application/x-ndjson)",
             "submitTask", "task", {"202": resp("accepted", ref("Task")), "200": resp("progress stream", ref("StreamEvent"), "text/event-stream", {"application/x-ndjson": {"schema": ref("StreamEvent")}}), **std},
             jbody("TaskSubmit"), tags=["tasks"]),
  "get": op("The tenant's tasks (running, and finished in the last 10 minutes)", "listTasks", "task",
            {"200": resp("tasks", {"type": "object", "properties": {"tasks": {"type": "array", "items": ref("Task")}}}), **errs(401, 403, 429)}, tags=["tasks"])}
P["/v1/tasks/{id}"] = {"get": op("A task: status, and its result once done", "getTask", "task",
                                 {"200": resp("the task", ref("Task")), **errs(401, 403, 404, 429)}, params=[idp], tags=["tasks"])}
P["/v1/tasks/{id}/events"] = {"get": op("A task's progress from its start, then live until it ends (SSE by default)", "taskEvents", "task",
                                        {"200": resp("events", {"type": "string"}, "text/event-stream", {"application/x-ndjson": {"schema": ref("StreamEvent")}}), **errs(401, 403, 404, 429)},
                                        params=[idp], tags=["tasks"])}
P["/v1/tasks/{id}/cancel"] = {"post": op("Cancel a task (the model call is hung up, the VM released)", "cancelTask", "task",
                                         {"202": resp("cancelling", ref("Task")), **errs(401, 403, 404, 429)}, params=[idp], tags=["tasks"])}
P["/v1/sandboxes"] = {
  "post": op("Create a sandbox (a microVM that lives across calls). With `mounts`: 403 mountRefused unless nv-api runs with --allow-mounts "
             "and every hostPath is under one of the executor's --mount-root directories (checked before any VM is leased)", "createSandbox", "sandbox",
             {"201": resp("created", ref("Sandbox")), **std}, jbody("SandboxCreate", False), tags=["sandboxes"]),
  "get": op("The tenant's sandboxes", "listSandboxes", "sandbox",
            {"200": resp("sandboxes", {"type": "object", "properties": {"sandboxes": {"type": "array", "items": ref("Sandbox")}}}), **std},
            params=[{"name": "label", "in": "query", "required": False, "schema": {"type": "string"}, "description": "key=value; repeatable; all must match"},
                    {"name": "includeDestroyed", "in": "query", "required": False, "schema": {"type": "boolean"}}], tags=["sandboxes"])}
P["/v1/sandboxes/{id}"] = {
  "get": op("A sandbox", "getSandbox", "sandbox", {"200": resp("the sandbox", ref("Sandbox")), **std}, params=[idp], tags=["sandboxes"]),
  "delete": op("Destroy a sandbox", "deleteSandbox", "sandbox", {"200": resp("destroyed", ref("Sandbox")), **std}, params=[idp], tags=["sandboxes"])}
P["/v1/sandboxes/{id}/exec"] = {"post": op("Run code in the sandbox (JSON, or streamed as NDJSON/SSE per Accept)", "sandboxExec", "sandbox",
                                           {"200": resp("the result, or the event stream", ref("ExecResult"), extra=stream), **std},
                                           jbody("SandboxExec"), params=[idp], tags=["sandboxes"])}
P["/v1/sandboxes/{id}/files"] = {
  "put": op("Write a file (the raw body; replaces it atomically, or appends with ?append=true)", "writeFile", "sandbox",
            {"200": resp("the file's entry", ref("FileEntry")), **errs(400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504)},
            {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
            params=[idp, pathq, {"name": "mode", "in": "query", "required": False, "schema": {"type": "string"}, "description": "octal permission bits, e.g. 0755"},
                    {"name": "append", "in": "query", "required": False, "schema": {"type": "boolean"}}], tags=["files"]),
  "get": op("Read a file (the raw bytes)", "readFile", "sandbox",
            {"200": resp("the bytes", {"type": "string", "contentMediaType": "application/octet-stream"}, "application/octet-stream"), **std},
            params=[idp, pathq], tags=["files"]),
  "delete": op("Remove a file or (recursive=true) a directory tree", "removeFile", "sandbox",
               {"200": resp("removed", {"type": "object"}), **std}, params=[idp, pathq, {"name": "recursive", "in": "query", "required": False, "schema": {"type": "boolean"}}], tags=["files"])}
P["/v1/sandboxes/{id}/files/list"] = {"get": op("List a directory", "listFiles", "sandbox",
  {"200": resp("entries", {"type": "object", "properties": {"entries": {"type": "array", "items": ref("FileEntry")}}}), **std},
  params=[idp, pathq, {"name": "recursive", "in": "query", "required": False, "schema": {"type": "boolean"}}], tags=["files"])}
for name, summ, body, code in [("fork", "Fork: N new sandboxes with this one's running state", "ForkRequest", "200"),
                               ("snapshot", "Snapshot the sandbox under a name (on disk)", "SnapshotRequest", "201"),
                               ("pause", "Pause: state to disk, RAM freed", None, "200"),
                               ("resume", "Resume a paused sandbox", None, "200"),
                               ("keepalive", "Touch the sandbox (idle timer) and optionally extend its lifetime", "KeepaliveRequest", "200")]:
    out = {"fork": {"type": "object", "properties": {"sandboxes": {"type": "array", "items": ref("Sandbox")}}},
           "snapshot": ref("Snapshot")}.get(name, ref("Sandbox"))
    P["/v1/sandboxes/{id}/" + name] = {"post": op(summ, name + "Sandbox", "sandbox", {code: resp("done", out), **std},
                                                  jbody(body, False) if body else None, params=[idp], tags=["sandboxes"])}
P["/v1/sandboxes/{id}/sync"] = {"post": op(
  "Copy the sandbox's read-write host mounts out to the host now (write to a temp file, then rename)", "syncSandbox", "sandbox",
  {"200": resp("one entry per read-write mount", {"type": "object", "properties": {"synced": {"type": "array", "items": ref("MountSync")}}}),
   **errs(400, 401, 403, 404, 409, 429, 500, 502, 503, 504, 507)}, params=[idp], tags=["sandboxes"])}
P["/v1/snapshots"] = {"get": op("The tenant's snapshots", "listSnapshots", "sandbox",
  {"200": resp("snapshots", {"type": "object", "properties": {"snapshots": {"type": "array", "items": ref("Snapshot")}}}), **std}, tags=["sandboxes"])}
P["/v1/snapshots/{name}"] = {"delete": op("Delete a snapshot", "deleteSnapshot", "sandbox", {"200": resp("deleted", {"type": "object"}), **std},
  params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}], tags=["sandboxes"])}
P["/mcp"] = {"get": op("MCP server-initiated stream: not offered (405, as the transport allows)", "mcpGet", "sandbox,task",
  {"405": E, **errs(401, 403, 429)}, tags=["mcp"]),
  "post": op("MCP Streamable HTTP transport (JSON-RPC 2.0, MCP 2025-06-18)", "mcp", "sandbox,task",
  {"200": resp("a JSON-RPC response, or an SSE stream of messages", {"type": "object"}, extra={"text/event-stream": {"schema": {"type": "string"}}}),
   "202": resp("notification accepted"), **errs(400, 401, 403, 404, 429)},
  {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}, tags=["mcp"])}

S = {}
S["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "traceId"],
    "properties": {"code": {"type": "string", "description": "common.capnp Error.Code name, or routeNotFound, payloadTooLarge, unauthorized, forbidden, rateLimited. "
                                                                       "mountRefused is HTTP 403 (a host mount is not allowed), mountQuota HTTP 507 (RFC 4918: a mount's quota is used up)"},
                   "message": {"type": "string"}, "traceId": {"type": "string"}}}}}
S["Readiness"] = {"type": "object", "properties": {"ready": {"type": "boolean"}, "executor": {"type": "boolean"}, "warmVms": {"type": "integer"}, "reason": {"type": "string"}}}
lang = {"type": "string", "enum": ["python", "bash", "sh", "javascript", "py", "python3", "node", "nodejs", "js"]}
tier = {"type": "string", "enum": ["small", "medium", "large"]}
u32 = {"type": "integer", "minimum": 0, "maximum": 4294967295}
envs = {"type": "object", "additionalProperties": {"type": "string"}}
execp = {"language": lang, "code": {"type": "string"}, "stdin": {"type": "string"}, "env": envs, "timeoutMs": u32, "outputCapBytes": u32, "tailBytes": u32}
S["OneShotExec"] = {"type": "object", "additionalProperties": False, "required": ["language", "code"], "properties": {**execp, "tier": tier}}
S["SandboxExec"] = {"type": "object", "additionalProperties": False, "required": ["language", "code"], "properties": {**execp, "cwd": {"type": "string"},
    "context": {"type": "string", "description": "persistent interpreter name (python/javascript)"}, "background": {"type": "boolean"}}}
S["ExecResult"] = {"type": "object", "properties": {k: v for k, v in [("exitCode", {"type": "integer"}), ("signal", {"type": "integer"}), ("timedOut", {"type": "boolean"}),
    ("truncated", {"type": "boolean"}), ("stdout", {"type": "string"}), ("stderr", {"type": "string"}), ("stdoutTail", {"type": "string"}), ("stderrTail", {"type": "string"}),
    ("stdoutBytes", {"type": "integer"}), ("stderrBytes", {"type": "integer"}), ("durationMs", {"type": "number"}), ("wallMs", {"type": "number"}),
    ("vmId", {"type": "string"}), ("hostKilled", {"type": "boolean"}), ("note", {"type": "string"}), ("traceId", {"type": "string"})]}}
S["StreamEvent"] = {"type": "object", "required": ["event"], "properties": {"event": {"type": "string",
    "description": "exec: status, stdout, stderr, result, error; tasks: thinking, modelDelta, thinkingDelta, modelText, notice, toolCall, output, execResult, toolError, result, error"},
    "data": {"type": "string"}}, "additionalProperties": True}
S["TaskSubmit"] = {"type": "object", "additionalProperties": False, "required": ["prompt"], "properties": {"prompt": {"type": "string"}, "model": {"type": "string"},
    "maxIterations": u32, "timeoutMs": u32, "tier": tier,
    "mounts": {"type": "array", "maxItems": 8, "items": ref("Mount"),
               "description": "host directories for the task's sandbox (403 mountRefused unless nv-api runs with --allow-mounts; one outside the "
                              "executor's --mount-root fails the task with mountRefused before any model call); read-write ones are copied back when the task ends"}}}
S["Task"] = {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "prompt": {"type": "string"}, "traceId": {"type": "string"},
    "createdUnixMs": {"type": "integer"}, "events": {"type": "integer"}, "result": {"type": "object"}}}
labels = {"type": "object", "additionalProperties": {"type": "string"}}
S["Mount"] = {"type": "object", "additionalProperties": False, "required": ["hostPath", "guestPath"],
    "description": "a host directory copied into the sandbox at creation; a read-write one is copied back at /sync and when the sandbox is destroyed",
    "properties": {"hostPath": {"type": "string", "description": "absolute host directory under one of the executor's --mount-root"},
                   "guestPath": {"type": "string", "description": "absolute, strictly under /home/agent"},
                   "readOnly": {"type": "boolean", "default": False},
                   "quotaBytes": {"type": "integer", "minimum": 0, "description": "bytes the sandbox may add (0 = the executor's default, 256 MiB)"},
                   "quotaFiles": {**u32, "description": "files the sandbox may add (0 = the executor's default, 10000)"}}}
S["MountSync"] = {"type": "object", "properties": {"guestPath": {"type": "string"}, "hostPath": {"type": "string"},
    "filesWritten": {"type": "integer"}, "bytesWritten": {"type": "integer"}, "filesRemoved": {"type": "integer"},
    "skipped": {"type": "array", "items": {"type": "string"}, "description": "\"<path>: <why>\" (symlink, device node, hard link, conflict), at most 100"}}}
S["SandboxCreate"] = {"type": "object", "additionalProperties": False, "properties": {"tier": tier, "env": envs, "cwd": {"type": "string"},
    "lifetimeMs": u32, "idleTimeoutMs": u32, "labels": labels, "fromSnapshot": {"type": "string"},
    "mounts": {"type": "array", "maxItems": 8, "items": ref("Mount")}}}
S["Sandbox"] = {"type": "object", "properties": {"id": {"type": "string"}, "state": {"type": "string", "enum": ["starting", "running", "paused", "destroyed"]},
    "tier": {"type": "string"}, "vcpus": {"type": "integer"}, "memoryMib": {"type": "integer"}, "vmId": {"type": "string"},
    "createdUnixMs": {"type": "integer"}, "deadlineUnixMs": {"type": "integer"}, "idleDeadlineUnixMs": {"type": "integer"}, "lastActiveUnixMs": {"type": "integer"},
    "labels": labels, "parentId": {"type": "string"}, "fromSnapshot": {"type": "string"}, "cwd": {"type": "string"}, "endReason": {"type": "string"},
    "mounts": {"type": "array", "items": ref("Mount")}}}
S["FileEntry"] = {"type": "object", "properties": {"path": {"type": "string"}, "type": {"type": "string", "enum": ["file", "directory", "symlink", "other"]},
    "size": {"type": "integer"}, "mode": {"type": "integer"}, "mtimeUnixMs": {"type": "integer"}, "linkTarget": {"type": "string"}}}
S["ForkRequest"] = {"type": "object", "additionalProperties": False, "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 16}, "labels": labels}}
S["SnapshotRequest"] = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {"name": {"type": "string"}}}
S["KeepaliveRequest"] = {"type": "object", "additionalProperties": False, "properties": {"extendMs": u32}}
S["Snapshot"] = {"type": "object", "properties": {"name": {"type": "string"}, "tier": {"type": "string"}, "sourceSandboxId": {"type": "string"},
    "createdUnixMs": {"type": "integer"}, "memoryBytes": {"type": "integer"}, "stateBytes": {"type": "integer"}}}
doc = {"openapi": "3.1.0",
       "info": {"title": "NeuroVisor API", "version": "0.1.0",
                "description": "Run AI-agent code in throw-away microVMs over HTTP (nv-api). Every error is {\"error\":{\"code\",\"message\",\"traceId\"}}; x-scope names the API key scope a route needs. A W3C traceparent header is accepted and its trace id propagated to the bus."},
       "servers": [{"url": "http://127.0.0.1:8420"}],
       "security": [{"apiKey": []}],
       "paths": P,
       "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "nvk_<id>_<secret> from `nv-keygen --api`"}},
                      "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": ref("Error")}}}},
                      "schemas": S}}
print(json.dumps(doc, indent=1))
