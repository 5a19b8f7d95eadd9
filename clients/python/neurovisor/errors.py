"""Typed errors: one class per kind of HTTP answer, each carrying nv-api's error object
({"error": {"code", "message", "traceId"}})."""


class NeuroVisorError(Exception):
    """Any error answer of nv-api (or a broken connection: status 0)."""

    def __init__(self, status, code, message, trace_id="", retry_after=None):
        super().__init__(f"{status} {code}: {message}" + (f" (trace {trace_id})" if trace_id else ""))
        self.status = status
        self.code = code
        self.message = message
        self.trace_id = trace_id
        self.retry_after = retry_after


class BadRequest(NeuroVisorError):
    """400 or 413: a field is wrong, unknown or too large."""


class AuthError(NeuroVisorError):
    """401 (no or a bad API key) or 403 (the key lacks a scope)."""


class MountRefused(AuthError):
    """403 mountRefused: host mounts are off in this nv-api (--allow-mounts), or the host path is
    outside every --mount-root of the executor (the message names the rule)."""


class NotFound(NeuroVisorError):
    """404: no such sandbox, snapshot, task, file or route (another tenant's id reads the same)."""


class Conflict(NeuroVisorError):
    """409: the operation does not fit the sandbox's state (e.g. exec while paused)."""


class RateLimited(NeuroVisorError):
    """429: over the tenant's request rate or limits; `retry_after` in seconds when given."""


class ServerError(NeuroVisorError):
    """5xx: the stack could not serve the call (no executor, a VM died, a timeout)."""


class MountQuota(ServerError):
    """507 mountQuota: a read-write mount holds more bytes or files than its quota."""


def error_for(status, code, message, trace_id="", retry_after=None):
    cls = NeuroVisorError
    if code == "mountRefused":
        cls = MountRefused
    elif code == "mountQuota":
        cls = MountQuota
    elif status in (400, 413):
        cls = BadRequest
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status == 429:
        cls = RateLimited
    elif status >= 500:
        cls = ServerError
    return cls(status, code, message, trace_id, retry_after)
