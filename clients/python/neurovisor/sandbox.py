"""Sandboxes: microVMs that live across calls (nv-api /v1/sandboxes)."""
import urllib.parse

from .client import ExecResult, _exec_body, run_stream


class Files:
    """A sandbox's files (paths absolute, under /home/agent or /tmp)."""

    def __init__(self, sandbox):
        self._s = sandbox

    def write(self, path, data, mode=None, append=False):
        """Writes bytes (or text, as UTF-8); returns the file's entry."""
        if isinstance(data, str):
            data = data.encode()
        q = {"path": path}
        if mode is not None:
            q["mode"] = format(mode, "o")
        if append:
            q["append"] = "true"
        return self._s._client.request("PUT", self._s._path("/files"), data, query=q, raw=True)

    def read(self, path):
        """The file's bytes."""
        return self._s._client.request("GET", self._s._path("/files"), query={"path": path},
                                       want_bytes=True)

    def list(self, path="/home/agent", recursive=False):
        """Entries {path, type, size, mode, mtimeUnixMs} of a directory."""
        q = {"path": path}
        if recursive:
            q["recursive"] = "true"
        return self._s._client.request("GET", self._s._path("/files/list"), query=q)["entries"]

    def remove(self, path, recursive=False):
        q = {"path": path, "recursive": "true" if recursive else "false"}
        self._s._client.request("DELETE", self._s._path("/files"), query=q)


class Mount:
    """A host directory for Sandbox.create(mounts=[...]): copied in at creation; a read-write
    one is copied back to the host by Sandbox.sync() and when the sandbox is destroyed.
    guest_path: absolute under /home/agent. quota_bytes / quota_files: what the sandbox may add
    (0 = the executor's default)."""

    def __init__(self, host_path, guest_path, read_only=True, quota_bytes=0, quota_files=0):
        self.host_path = host_path
        self.guest_path = guest_path
        self.read_only = read_only
        self.quota_bytes = quota_bytes
        self.quota_files = quota_files

    def to_json(self):
        return {"hostPath": self.host_path, "guestPath": self.guest_path,
                "readOnly": self.read_only, "quotaBytes": self.quota_bytes,
                "quotaFiles": self.quota_files}


class Sandbox:
    """One sandbox. Use as a context manager to destroy it on exit:

        with Sandbox.create(client) as sbx:
            sbx.run_code("print(1)")
    """

    def __init__(self, client, info):
        self._client = client
        self.info = info
        self.id = info["id"]
        self.files = Files(self)

    @classmethod
    def create(cls, client, *, tier=None, env=None, cwd=None, lifetime_ms=None,
               idle_timeout_ms=None, labels=None, from_snapshot=None, mounts=None):
        """A new sandbox. `mounts`: host directories copied in, each a Mount or a dict
        {"hostPath", "guestPath", "readOnly", "quotaBytes", "quotaFiles"}; nv-api must run with
        --allow-mounts and the path be under the executor's --mount-root (else MountRefused)."""
        body = {k: v for k, v in {"tier": tier, "env": env, "cwd": cwd, "lifetimeMs": lifetime_ms,
                                  "idleTimeoutMs": idle_timeout_ms, "labels": labels,
                                  "fromSnapshot": from_snapshot}.items() if v is not None}
        if mounts is not None:
            body["mounts"] = [m.to_json() if isinstance(m, Mount) else dict(m) for m in mounts]
        return cls(client, client.request("POST", "/v1/sandboxes", body))

    @classmethod
    def get(cls, client, sandbox_id):
        return cls(client, client.request("GET", "/v1/sandboxes/" + urllib.parse.quote(sandbox_id)))

    @classmethod
    def list(cls, client, labels=None):
        q = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        return [cls(client, i) for i in client.request("GET", "/v1/sandboxes", query=q)["sandboxes"]]

    def _path(self, suffix=""):
        return "/v1/sandboxes/" + urllib.parse.quote(self.id) + suffix

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    def refresh(self):
        self.info = self._client.request("GET", self._path())
        return self.info

    @property
    def state(self):
        return self.info.get("state")

    def exec(self, language, code, *, stdin=None, env=None, timeout_ms=None, cwd=None,
             context=None, background=None, on_stdout=None, on_stderr=None):
        """Runs code in the sandbox; with on_stdout/on_stderr the output streams to them."""
        body = _exec_body(language, code, stdin, env, timeout_ms, cwd=cwd, context=context,
                          background=background)
        if not (on_stdout or on_stderr):
            return ExecResult.from_json(self._client.request("POST", self._path("/exec"), body))
        return run_stream(self._client.stream("POST", self._path("/exec"), body), on_stdout,
                          on_stderr)

    def run_code(self, code, language="python", **kw):
        """exec() with python as the default language."""
        return self.exec(language, code, **kw)

    def fork(self, count=1, labels=None):
        body = {"count": count}
        if labels:
            body["labels"] = labels
        out = self._client.request("POST", self._path("/fork"), body)
        return [Sandbox(self._client, i) for i in out["sandboxes"]]

    def sync(self):
        """Copies the read-write mounts out to the host now; returns one dict per read-write
        mount: {guestPath, hostPath, filesWritten, bytesWritten, filesRemoved, skipped}.
        MountQuota when a mount holds more than its quota."""
        return self._client.request("POST", self._path("/sync"), {})["synced"]

    def snapshot(self, name):
        return self._client.request("POST", self._path("/snapshot"), {"name": name})

    def pause(self):
        self.info = self._client.request("POST", self._path("/pause"), {})
        return self.info

    def resume(self):
        self.info = self._client.request("POST", self._path("/resume"), {})
        return self.info

    def keepalive(self, extend_ms=0):
        self.info = self._client.request("POST", self._path("/keepalive"),
                                         {"extendMs": extend_ms} if extend_ms else {})
        return self.info

    def destroy(self):
        from .errors import NotFound
        try:
            self.info = self._client.request("DELETE", self._path())
        except NotFound:
            pass  # already gone (lifetime, idle timeout, or destroyed before)
        return self.info
