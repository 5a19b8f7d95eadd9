"""The HTTP transport (http.client) and the one-shot exec."""
import http.client
import json
import os
import urllib.parse
from dataclasses import dataclass, field

from .errors import NeuroVisorError, error_for


@dataclass
class ExecResult:
    """How a program ended: nv-api's result object (program bytes as text, U+FFFD for bytes
    that are not UTF-8)."""
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0
    vm_id: str = ""
    trace_id: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d):
        return cls(d.get("exitCode", -1), d.get("stdout", ""), d.get("stderr", ""),
                   d.get("timedOut", False), d.get("truncated", False), d.get("durationMs", 0.0),
                   d.get("vmId", ""), d.get("traceId", ""), d)


def _exec_body(language, code, stdin=None, env=None, timeout_ms=None, **extra):
    body = {"language": language, "code": code}
    if stdin is not None:
        body["stdin"] = stdin
    if env:
        body["env"] = dict(env)
    if timeout_ms:
        body["timeoutMs"] = int(timeout_ms)
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


class Client:
    """A connection to nv-api. `url` and `api_key` default to $NV_API_URL and $NV_API_KEY.
    Not thread-safe (one http.client connection); make one Client per thread."""

    def __init__(self, url=None, api_key=None, timeout=300.0):
        self.url = url or os.environ.get("NV_API_URL", "http://127.0.0.1:8420")
        self.api_key = api_key or os.environ.get("NV_API_KEY", "")
        u = urllib.parse.urlsplit(self.url)
        if u.scheme not in ("http", "https"):
            raise ValueError("url must be http:// or https://")
        self._host, self._port, self._tls = u.hostname, u.port, u.scheme == "https"
        self.timeout = timeout
        self._conn = None

    # ---- transport ---------------------------------------------------------------------------
    def _connection(self):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _send(self, method, path, body=None, query=None, headers=None, raw=False):
        if query:
            path += "?" + urllib.parse.urlencode(query, doseq=True)
        h = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        h.update(headers or {})
        data = None
        if body is not None:
            if raw:
                data = body
                h.setdefault("Content-Type", "application/octet-stream")
            else:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=h)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except OSError as e:
                self.close()
                raise NeuroVisorError(0, "unreachable", f"nv-api at {self.url}: {e}") from e
        raise AssertionError("unreachable")

    @staticmethod
    def _raise(resp, data):
        try:
            e = json.loads(data)["error"]
            code, message, trace = e.get("code", ""), e.get("message", ""), e.get("traceId", "")
        except (ValueError, KeyError, TypeError):
            code, message, trace = "http", data[:200].decode(errors="replace"), ""
        retry = resp.getheader("Retry-After")
        raise error_for(resp.status, code, message, trace, float(retry) if retry else None)

    def request(self, method, path, body=None, query=None, raw=False, want_bytes=False):
        """One call; returns the decoded JSON (or bytes with want_bytes); raises a typed error."""
        resp = self._send(method, path, body, query, raw=raw)
        data = resp.read()
        if resp.status >= 400:
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            self._raise(resp, data)
        if want_bytes:
            return data
        return json.loads(data) if data else None

    def stream(self, method, path, body=None):
        """Yields the event objects of an NDJSON stream as they arrive."""
        resp = self._send(method, path, body, headers={"Accept": "application/x-ndjson"})
        if resp.status >= 400:
            self._raise(resp, resp.read())
        try:
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            resp.close()
            self.close()  # the stream's connection is not reused

    # ---- one-shot exec -----------------------------------------------------------------------
    def exec(self, language, code, *, stdin=None, env=None, timeout_ms=None, tier=None,
             on_stdout=None, on_stderr=None):
        """Runs code once in a fresh microVM. With on_stdout/on_stderr the output is streamed to
        them as it is written; the ExecResult comes at the end either way."""
        body = _exec_body(language, code, stdin, env, timeout_ms, tier=tier)
        if not (on_stdout or on_stderr):
            return ExecResult.from_json(self.request("POST", "/v1/exec", body))
        return run_stream(self.stream("POST", "/v1/exec", body), on_stdout, on_stderr)

    def health(self):
        return self.request("GET", "/healthz")


def run_stream(events, on_stdout=None, on_stderr=None):
    """Hands the stdout/stderr events of an exec stream to the callbacks; returns the result."""
    for ev in events:
        kind = ev.get("event")
        if kind == "stdout" and on_stdout:
            on_stdout(ev.get("data", ""))
        elif kind == "stderr" and on_stderr:
            on_stderr(ev.get("data", ""))
        elif kind == "result":
            return ExecResult.from_json(ev)
        elif kind == "error":
            e = ev.get("error", {})
            raise error_for(500, e.get("code", ""), e.get("message", ""), e.get("traceId", ""))
    raise NeuroVisorError(0, "streamCut", "the stream ended without a result")
