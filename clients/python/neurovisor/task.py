"""Agent tasks (nv-api /v1/tasks): submit, iterate the progress, read the answer."""
import urllib.parse

from .errors import NeuroVisorError


class Task:
    """A submitted task. Iterating it yields its progress events (dicts with "event":
    thinking, modelDelta, modelText, toolCall, output, execResult, toolError, notice) live,
    ending with the "result" event; `result` and `answer` are set then.

        for ev in Task.submit(client, "find all primes under 100"):
            ...
    """

    def __init__(self, client, info):
        self._client = client
        self.id = info["id"]
        self.info = info
        self.result = None

    @classmethod
    def submit(cls, client, prompt, *, model=None, max_iterations=None, timeout_ms=None,
               tier=None):
        body = {"prompt": prompt}
        for k, v in (("model", model), ("maxIterations", max_iterations),
                     ("timeoutMs", timeout_ms), ("tier", tier)):
            if v is not None:
                body[k] = v
        return cls(client, client.request("POST", "/v1/tasks", body))

    def _path(self, suffix=""):
        return "/v1/tasks/" + urllib.parse.quote(self.id) + suffix

    def __iter__(self):
        for ev in self._client.stream("GET", self._path("/events")):
            if ev.get("event") == "result":
                self.result = ev
            elif ev.get("event") == "error":
                e = ev.get("error", {})
                raise NeuroVisorError(500, e.get("code", ""), e.get("message", ""),
                                      e.get("traceId", ""))
            yield ev

    def wait(self):
        """Consumes the progress; returns the final result object."""
        for _ in self:
            pass
        return self.result

    @property
    def answer(self):
        return (self.result or {}).get("answer")

    def refresh(self):
        self.info = self._client.request("GET", self._path())
        return self.info

    def cancel(self):
        self.info = self._client.request("POST", self._path("/cancel"), {})
        return self.info
