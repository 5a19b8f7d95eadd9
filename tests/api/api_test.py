#!/usr/bin/python3
"""api_test.py — nv-api over real HTTP against a real stack (orchestrator, llm-gateway with the
scripted model, nv-api; no VMs): auth and scopes, the OpenAPI document against the routes, bad
input (malformed JSON, wrong types, unknown fields, a 100 MiB body, slowloris, a 1,000-request
burst), traceparent, metrics, tenant isolation of tasks, a task streamed over SSE and through the
Python SDK. Clients nobody here wrote: Python's http.client and curl."""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from api_stack import SRC, Stack, binary, call, jcall  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "clients", "python"))
import neurovisor  # noqa: E402

STACK = None


def setUpModule():
    global STACK
    STACK = Stack("llm-gateway,api", {"NV_API_READ_TIMEOUT_MS": "2000"})


def tearDownModule():
    if STACK:
        STACK.down()


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.url = STACK.url
        cls.a = STACK.key("tenant-a")
        cls.b = STACK.key("tenant-b")
        cls.admin = STACK.key("ops", "admin")
        cls.task_only = STACK.key("tenant-t", "task")
        cls.sandbox_only = STACK.key("tenant-s", "sandbox")

    def assertError(self, status, body, want_status, want_code):
        self.assertEqual(status, want_status, body)
        self.assertIsInstance(body, dict, body)
        e = body["error"]
        self.assertEqual(e["code"], want_code, body)
        self.assertTrue(e["message"])
        self.assertRegex(e["traceId"], r"^[0-9a-f-]{36}$")

    # ---- health, documents, auth -------------------------------------------------------------
    def test_health_and_readiness(self):
        s, _, b = jcall(self.url, "GET", "/healthz")
        self.assertEqual((s, b), (200, {"status": "ok"}))
        s, _, b = jcall(self.url, "GET", "/readyz")
        self.assertEqual(s, 503)  # no executor in this stack
        self.assertFalse(b["ready"])
        self.assertIn("executor", b["reason"])

    def test_openapi_matches_the_routes(self):
        s, _, doc = jcall(self.url, "GET", "/openapi.json")
        self.assertEqual(s, 200)
        self.assertEqual(doc["openapi"], "3.1.0")
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        out = subprocess.run([binary("nv-api"), "--list-routes"], env=STACK.env,
                             capture_output=True, text=True, check=True).stdout
        served = {tuple(l.split()[:2]) for l in out.splitlines() if l.strip()}
        self.assertEqual(served - documented, set(), "routes the document lacks")
        self.assertEqual(documented - served, set(), "documented routes the server lacks")
        # Every documented route answers (its own answer, not "no route"), in the error shape.
        for method, path in sorted(documented):
            p = path.replace("{id}", "sbx-nobody-0123456789abcdef").replace("{name}", "snap")
            s, _, b = call(self.url, method, p, key=self.admin, timeout=120)
            self.assertNotEqual(s, 0)
            if s >= 400 and path != "/readyz":  # readyz: 503 with its readiness object
                body = json.loads(b)
                self.assertNotEqual(body["error"]["code"], "routeNotFound", f"{method} {path}")
        s, _, b = jcall(self.url, "GET", "/v1/nothing", key=self.a)
        self.assertError(s, b, 404, "routeNotFound")

    def test_auth_and_scopes(self):
        s, h, b = jcall(self.url, "GET", "/v1/tasks")
        self.assertError(s, b, 401, "unauthorized")
        self.assertIn("Bearer", h["www-authenticate"])
        bad = self.a[:-4] + ("0000" if not self.a.endswith("0000") else "1111")
        s, _, b = jcall(self.url, "GET", "/v1/tasks", key=bad)
        self.assertError(s, b, 401, "unauthorized")
        s, _, b = jcall(self.url, "GET", "/v1/tasks", key="nvk_notakey")
        self.assertError(s, b, 401, "unauthorized")
        s, _, b = jcall(self.url, "POST", "/v1/exec", key=self.task_only,
                        body={"language": "python", "code": "1"})
        self.assertError(s, b, 403, "forbidden")
        s, _, b = jcall(self.url, "GET", "/v1/tasks", key=self.sandbox_only)
        self.assertError(s, b, 403, "forbidden")
        s, _, b = jcall(self.url, "GET", "/metrics", key=self.a)
        self.assertError(s, b, 403, "forbidden")
        # The key file holds hashes only: no key text appears in it.
        with open(os.path.join(STACK.rt, "state", "api-keys")) as f:
            stored = f.read()
        for k in (self.a, self.b, self.admin):
            self.assertNotIn(k.split("_")[2], stored)
            self.assertIn(k.split("_")[1], stored)
        self.assertEqual(os.stat(os.path.join(STACK.rt, "state", "api-keys")).st_mode & 0o777, 0o600)

    # ---- bad input ---------------------------------------------------------------------------
    def test_malformed_json_wrong_types_unknown_fields(self):
        cases = [
            ('{"language": "python", "code": ', "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            ('{"language": "python", "code": 42}', "'code' must be a string"),
            ('{"language": "python", "code": "1", "timeoutMs": -5}', "'timeoutMs' must be"),
            ('{"language": "python", "code": "1", "timeoutMs": "10"}', "'timeoutMs' must be"),
            ('{"language": "python", "code": "1", "env": {"A": 1}}', "env.A must be a string"),
            ('{"language": "python", "code": "1", "evil": true}', "unknown field 'evil'"),
            ('{"language": "cobol", "code": "1"}', "language must be"),
            ('{"code": "1"}', "'language' is required"),
            ("[" * 100000, "nests deeper"),
            ('{"language": "python", "code": "\xff"}', "not valid JSON"),
        ]
        for body, msg in cases:
            data = body.encode("latin-1") if "\xff" in body else body.encode()
            s, _, b = jcall(self.url, "POST", "/v1/exec", key=self.a, body=data)
            self.assertError(s, b, 400, "badRequest")
            self.assertIn(msg, b["error"]["message"], body[:40])
        s, _, b = jcall(self.url, "POST", "/v1/tasks", key=self.a, body={"prompt": "x", "tier": 3})
        self.assertError(s, b, 400, "badRequest")
        s, _, b = jcall(self.url, "POST", "/v1/tasks", key=self.a, body={"prompt": "x", "steps": 3})
        self.assertError(s, b, 400, "badRequest")
        s, _, _ = jcall(self.url, "GET", "/healthz")
        self.assertEqual(s, 200)

    def test_mounts_validated_and_refused_without_allow_mounts(self):
        """Issue 15: a mount's shape is checked first (400 naming the element and member), then
        this nv-api, started without --allow-mounts, refuses any mount with 403 mountRefused
        before a sandbox is asked for; the SDK raises MountRefused."""
        good = {"hostPath": "/srv/proj", "guestPath": "/home/agent/proj", "readOnly": False}
        for mounts, msg in [
            ({"hostPath": "/a"}, "field 'mounts' must be an array"),
            ([{"guestPath": "/home/agent/a"}], "mounts[0].hostPath is required"),
            ([good, {"hostPath": "/b", "guestPath": 5}], "mounts[1].guestPath must be"),
            ([dict(good, quotaBytes=-1)], "mounts[0].quotaBytes must be"),
            ([dict(good, host_path="/x")], "mounts[0].host_path is not a mount field"),
            ([good] * 9, "has 9 entries; the limit is 8"),
        ]:
            s, _, b = jcall(self.url, "POST", "/v1/sandboxes", key=self.a, body={"mounts": mounts})
            self.assertError(s, b, 400, "badRequest")
            self.assertIn(msg, b["error"]["message"])
        s, _, b = jcall(self.url, "POST", "/v1/sandboxes", key=self.a, body={"mounts": [good]})
        self.assertError(s, b, 403, "mountRefused")
        self.assertIn("--allow-mounts", b["error"]["message"])
        nv = neurovisor.Client(self.url, api_key=self.a)
        with self.assertRaises(neurovisor.MountRefused) as cm:
            neurovisor.Sandbox.create(nv, mounts=[neurovisor.Mount("/srv/proj", "/home/agent/p")])
        self.assertEqual(cm.exception.status, 403)
        self.assertIsInstance(cm.exception, neurovisor.AuthError)
        # MCP's create_sandbox: the same rule, as a tool error (isError) naming mountRefused.
        s, _, b = jcall(self.url, "POST", "/mcp", key=self.a,
                        headers={"Accept": "application/json"},
                        body={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "create_sandbox",
                                         "arguments": {"mounts": [good]}}})
        self.assertEqual(s, 200, b)
        self.assertTrue(b["result"]["isError"], b)
        self.assertIn("mountRefused", b["result"]["content"][0]["text"])
        # A task with a mount: the same rule on POST /v1/tasks.
        s, _, b = jcall(self.url, "POST", "/v1/tasks", key=self.a,
                        body={"prompt": "x", "mounts": [good]})
        self.assertError(s, b, 403, "mountRefused")
        s, _, b = jcall(self.url, "POST", "/v1/tasks", key=self.a,
                        body={"prompt": "x", "mounts": [{"hostPath": "/a"}]})
        self.assertError(s, b, 400, "badRequest")
        # No mounts (an empty list) is no mount: not refused as one (the stack has no executor).
        s, _, b = jcall(self.url, "POST", "/v1/sandboxes", key=self.a, body={"mounts": []})
        self.assertNotEqual(b["error"]["code"], "mountRefused", b)
        # sync on a sandbox that does not exist: the typed error of the sandbox service.
        s, _, b = jcall(self.url, "POST", "/v1/sandboxes/sbx-nobody-0123456789abcdef/sync",
                        key=self.a, body={})
        self.assertGreaterEqual(s, 400)
        self.assertNotEqual(b["error"]["code"], "routeNotFound")

    def _raw(self, data, read_timeout=10.0):
        sock = socket.create_connection(("127.0.0.1", STACK.port), timeout=read_timeout)
        sock.sendall(data)
        got = b""
        try:  # the status line, headers and the Content-Length bytes of the answer
            while True:
                head, sep, rest = got.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if sep and m and len(rest) >= int(m.group(1)):
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        finally:
            sock.close()
        return got

    def test_100_mib_body_refused_before_it_is_read(self):
        t0 = time.monotonic()
        head = (f"POST /v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.a}\r\n"
                "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n").encode()
        got = self._raw(head + b"{" * 1000)
        self.assertTrue(got.startswith(b"HTTP/1.1 413"), got[:200])
        self.assertIn(b"payloadTooLarge", got)
        self.assertIn(b"Connection: close", got)
        self.assertLess(time.monotonic() - t0, 5)  # answered, not read: 100 MiB never sent
        # Another of the kind: a file upload over --max-file-bytes (32 MiB), and with curl.
        head = (f"PUT /v1/sandboxes/sbx-x-0123456789abcdef/files?path=/tmp/a HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {self.a}\r\nContent-Length: {40 << 20}\r\n\r\n").encode()
        self.assertTrue(self._raw(head).startswith(b"HTTP/1.1 413"))
        big = os.path.join(STACK.rt, "big.json")
        with open(big, "wb") as f:
            f.truncate(100 << 20)
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                            "Authorization: Bearer " + self.a, "--data-binary", "@" + big,
                            self.url + "/v1/exec"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout, "413")
        os.unlink(big)
        self.assertEqual(jcall(self.url, "GET", "/healthz")[0], 200)

    def test_slowloris_is_bounded(self):
        # 24 clients that dribble headers one byte at a time, then go silent.
        socks = []
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", STACK.port), timeout=30)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            for s in socks:
                s.sendall(b"a")
            # The service keeps serving others meanwhile.
            t0 = time.monotonic()
            self.assertEqual(jcall(self.url, "GET", "/healthz", timeout=5)[0], 200)
            self.assertLess(time.monotonic() - t0, 2)
            time.sleep(0.5)
        # Silent now: each is dropped after --read-timeout-ms (2 s here), not held forever.
        t0 = time.monotonic()
        for s in socks:
            s.settimeout(15)
            try:
                data = s.recv(100)
            except (ConnectionResetError, socket.timeout):
                data = b"timeout"
            self.assertNotEqual(data, b"timeout", "a silent slow client was kept")
            s.close()
        self.assertLess(time.monotonic() - t0, 10)

    def test_burst_of_1000_requests(self):
        key = STACK.key("burst")
        results, lock = [], threading.Lock()

        def worker():
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", STACK.port, timeout=30)
            for _ in range(50):
                conn.request("GET", "/v1/tasks", headers={"Authorization": "Bearer " + key})
                r = conn.getresponse()
                body = r.read()
                with lock:
                    results.append((r.status, r.getheader("Retry-After"), body))
            conn.close()

        threads = [threading.Thread(target=worker) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 1000)
        codes = [r[0] for r in results]
        self.assertEqual(set(codes) - {200, 429}, set())
        self.assertGreater(codes.count(429), 0)
        self.assertGreaterEqual(codes.count(200), 100)  # the bucket's burst at least
        for status, retry, body in results:
            if status == 429:
                self.assertTrue(retry and int(retry) >= 1)
                self.assertEqual(json.loads(body)["error"]["code"], "rateLimited")
        # Still serving, and another tenant's bucket is its own.
        self.assertEqual(jcall(self.url, "GET", "/v1/tasks", key=self.b)[0], 200)

    # ---- tracing and metrics ------------------------------------------------------------------
    def test_traceparent_is_propagated(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        s, h, _ = call(self.url, "GET", "/v1/tasks", key=self.a, headers={"traceparent": tp})
        self.assertEqual(s, 200)
        self.assertEqual(h["x-trace-id"], "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
        self.assertTrue(h["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-"))
        # nv-api writes a request's log line once the response is sent (the line carries its
        # duration), so the client can read the response first: wait for the line.
        want = '"trace_id":"4bf92f35-77b3-4da6-a3ce-929d0e0e4736"'
        deadline = time.monotonic() + 10
        while want not in STACK.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(want, STACK.log())
        # A bad traceparent (all-zero trace id) is ignored: a new id is minted.
        s, h, _ = call(self.url, "GET", "/v1/tasks", key=self.a,
                       headers={"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
        self.assertNotIn("00000000", h["x-trace-id"])
        # Through the bus: a task's trace id is the caller's.
        tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        s, _, b = jcall(self.url, "POST", "/v1/tasks", key=self.a, headers={"traceparent": tp2},
                        body={"prompt": "direct: trace me"})
        self.assertEqual(s, 202, b)
        self.assertEqual(b["traceId"], "0af76519-16cd-43dd-8448-eb211c80319c")
        for _ in range(300):
            s, _, t = jcall(self.url, "GET", "/v1/tasks/" + b["id"], key=self.a)
            if t["status"] != "running":
                break
            time.sleep(0.1)
        self.assertEqual(t["result"]["traceId"], "0af76519-16cd-43dd-8448-eb211c80319c")

    def test_metrics_by_route_and_status(self):
        jcall(self.url, "GET", "/healthz")
        jcall(self.url, "GET", "/v1/tasks")
        s, _, b = call(self.url, "GET", "/metrics", key=self.admin)
        self.assertEqual(s, 200)
        text = b.decode()
        self.assertRegex(text, r'neurovisor_api_requests_total\{method="GET",route="/healthz",status="200"\} \d+')
        self.assertRegex(text, r'neurovisor_api_requests_total\{method="GET",route="unmatched",status="401"\} \d+')
        promtool = subprocess.run(["promtool", "check", "metrics"], input=text,
                                  capture_output=True, text=True)
        self.assertEqual(promtool.returncode, 0, promtool.stdout + promtool.stderr)

    # ---- tasks -------------------------------------------------------------------------------
    def test_task_streams_progress_over_sse_with_curl(self):
        r = subprocess.run(["curl", "-sN", "-H", "Authorization: Bearer " + self.a, "-H",
                            "Accept: text/event-stream", "-d", '{"prompt": "direct: what is 6*7?"}',
                            self.url + "/v1/tasks"], capture_output=True, text=True, timeout=300)
        events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", r.stdout)
        kinds = [k for k, _ in events]
        self.assertIn("thinking", kinds, r.stdout)
        self.assertEqual(kinds[-1], "result", r.stdout)
        result = json.loads(events[-1][1])
        self.assertEqual(result["status"], "completed")
        self.assertEqual(result["answer"], "The answer is 42.")

    def test_task_tenant_isolation_and_cancel(self):
        s, _, t = jcall(self.url, "POST", "/v1/tasks", key=self.a, body={"prompt": "direct: mine"})
        self.assertEqual(s, 202)
        for method, path in (("GET", f"/v1/tasks/{t['id']}"), ("GET", f"/v1/tasks/{t['id']}/events"),
                             ("POST", f"/v1/tasks/{t['id']}/cancel")):
            s, _, b = jcall(self.url, method, path, key=self.b)
            self.assertError(s, b, 404, "notFound")
        s, _, lst = jcall(self.url, "GET", "/v1/tasks", key=self.b)
        self.assertNotIn(t["id"], [x["id"] for x in lst["tasks"]])
        s, _, lst = jcall(self.url, "GET", "/v1/tasks", key=self.a)
        self.assertIn(t["id"], [x["id"] for x in lst["tasks"]])

    def test_sdk_installs_with_pip(self):
        import shutil
        import tempfile
        if subprocess.run(["/usr/bin/python3", "-m", "pip", "--version"], capture_output=True).returncode:
            self.skipTest("python3-pip is not installed (tools/setup.sh installs it)")
        src = tempfile.mkdtemp(prefix="nv-sdk-src-")
        dest = tempfile.mkdtemp(prefix="nv-sdk-")
        try:  # a copy, so the build leaves nothing in the tree
            shutil.copytree(os.path.join(SRC, "clients", "python"), src, dirs_exist_ok=True)
            r = subprocess.run(["/usr/bin/python3", "-m", "pip", "install", "--no-index",
                                "--no-build-isolation", "--target", dest, src],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = subprocess.run(["/usr/bin/python3", "-c", "import neurovisor; print(neurovisor.__file__)"],
                               capture_output=True, text=True, env={"PYTHONPATH": dest}, cwd=dest)
            self.assertTrue(r.stdout.startswith(dest), r.stdout + r.stderr)
        finally:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)

    def test_sdk_task_iterates_progress(self):
        nv = neurovisor.Client(self.url, api_key=self.a)
        task = neurovisor.Task.submit(nv, "direct: via the SDK")
        kinds = [ev["event"] for ev in task]
        self.assertIn("thinking", kinds)
        self.assertEqual(kinds[-1], "result")
        self.assertEqual(task.answer, "The answer is 42.")
        self.assertEqual(task.refresh()["status"], "completed")
        with self.assertRaises(neurovisor.NotFound), neurovisor.Client(self.url, api_key=self.b) as other:
            neurovisor.Task(other, {"id": task.id}).refresh()
        with self.assertRaises(neurovisor.AuthError), neurovisor.Client(self.url, api_key="nvk_bad") as bad:
            bad.exec("python", "1")
        with self.assertRaises(neurovisor.BadRequest) as e:
            nv.exec("cobol", "1")
        self.assertEqual(e.exception.code, "badRequest")
        nv.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
