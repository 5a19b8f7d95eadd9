"""api_stack.py — a NeuroVisor stack with nv-api for the API tests: the scripted model server
(tests/fixtures/fake_llm.py), `nv up --only ...` in a temp runtime dir, API keys made with
`nv-keygen --api`, `nv down` at the end. Standard library only."""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("NV_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("NV_BIN_DIR", os.path.join(SRC, "build", "bin"))
BUILD = os.environ.get("NV_BUILD_DIR", os.path.dirname(BIN))
MCP_SDK = "@modelcontextprotocol/sdk@1.32.2"  # the official MCP TypeScript SDK, pinned


def read(path):
    with open(path, errors="replace") as f:
        return f.read().strip()


def binary(name):
    return os.path.join(BIN, name)


class Stack:
    def __init__(self, services, extra_env=None, script="api_tasks.json"):
        self.rt = tempfile.mkdtemp(prefix="nv-api-test-")
        self.env = dict(os.environ)
        self.env.update({"NV_RUNTIME_DIR": self.rt, "NV_STATE_DIR": os.path.join(self.rt, "state"),
                         "NV_BIN_DIR": BIN, "NV_API_LISTEN": "127.0.0.1:0",
                         "NV_MODEL": "fake-model", "NV_LLM_API": "ollama"})
        self.env.update(extra_env or {})
        port_file = os.path.join(self.rt, "llm.port")
        self.fake = subprocess.Popen(
            [sys.executable, os.path.join(SRC, "tests/fixtures/fake_llm.py"), "--script",
             os.path.join(SRC, "tests/fixtures", script), "--port-file", port_file, "--quiet"],
            stdout=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(port_file) and read(port_file):
                break
            time.sleep(0.05)
        self.env["NV_LLM_URL"] = "http://127.0.0.1:" + read(port_file)
        up = subprocess.run([binary("nv"), "up", "--only", services, "--wait-s", "600"],
                            env=self.env, capture_output=True, text=True, timeout=700)
        if up.returncode != 0:
            self.down()
            raise RuntimeError("nv up failed:\n" + up.stdout + up.stderr)
        self.port = int(read(os.path.join(self.rt, "api.port")))
        self.url = f"http://127.0.0.1:{self.port}"

    def key(self, tenant, scopes="sandbox,task"):
        r = subprocess.run([binary("nv-keygen"), "--api", "--tenant", tenant, "--scopes", scopes],
                           env=self.env, capture_output=True, text=True, check=True)
        return r.stdout.strip()

    def log(self, name="api"):
        return read(os.path.join(self.rt, "logs", name + ".log"))

    def services(self):
        """Names registered with the broker (nv status --json)."""
        r = subprocess.run([binary("nv"), "status", "--json"], env=self.env, capture_output=True,
                           text=True, timeout=30)
        try:
            return {s["service"] for s in json.loads(r.stdout).get("services", [])}
        except ValueError:
            return set()

    def down(self):
        subprocess.run([binary("nv"), "down"], env=self.env, capture_output=True, timeout=120)
        self.fake.terminate()
        self.fake.wait(10)
        shutil.rmtree(self.rt, ignore_errors=True)


def call(url, method, path, key=None, body=None, headers=None, raw=None, timeout=600):
    """One HTTP request with Python's http.client; returns (status, headers, body bytes)."""
    u = url.split("//", 1)[1]
    host, port = u.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    h = dict(headers or {})
    if key:
        h["Authorization"] = "Bearer " + key
    data = raw
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def jcall(*a, **kw):
    s, h, b = call(*a, **kw)
    try:
        return s, h, json.loads(b) if b else None
    except ValueError:
        return s, h, b


def mcp_sdk_dir():
    """Installs the pinned official MCP TypeScript SDK from npm into the build dir (once)."""
    d = os.path.join(BUILD, "npm-mcp")
    mod = os.path.join(d, "node_modules", "@modelcontextprotocol", "sdk", "package.json")
    want = MCP_SDK.rsplit("@", 1)[1]
    if not (os.path.exists(mod) and json.loads(read(mod)).get("version") == want):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "package.json"), "w") as f:
            f.write('{"private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", d, MCP_SDK],
                       check=True, capture_output=True, timeout=600)
    shutil.copy(os.path.join(SRC, "tests/api/mcp_sdk_client.mjs"), d)
    return d


def run_mcp_client(args, env=None, timeout=900):
    d = mcp_sdk_dir()
    r = subprocess.run(["node", os.path.join(d, "mcp_sdk_client.mjs")] + args, cwd=d,
                       capture_output=True, text=True, timeout=timeout, env=env)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"ok": False, "error": r.stdout + r.stderr}
    return out
