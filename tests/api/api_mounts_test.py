#!/usr/bin/python3
"""api_mounts_test.py — host directory mounts over nv-api (issue 15) against a real stack with
real microVMs: nv-sandbox-executor --mount-root ROOT, nv-api --allow-mounts. Python's http.client
creates a sandbox with a read-write mount, the guest reads a host file and writes a binary one,
POST /v1/sandboxes/{id}/sync copies it out (the host file has exactly those bytes); the Python
SDK creates one with a read-only mount (writes fail in the guest, sync has nothing to copy); a
mount outside ROOT is 403 mountRefused (SDK: MountRefused); another tenant's sync is 404."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from api_stack import BUILD, SRC, Stack, binary, jcall  # noqa: E402

sys.path.insert(0, os.path.join(SRC, "clients", "python"))
import neurovisor  # noqa: E402

STACK = None
ROOT = None
KERNEL = os.environ.get("NV_GUEST_KERNEL", os.path.join(BUILD, "guest", "vmlinux"))
ROOTFS = os.environ.get("NV_GUEST_ROOTFS", os.path.join(BUILD, "guest", "rootfs.ext4"))


def setUpModule():
    global STACK, ROOT
    for f in (KERNEL, ROOTFS, binary("nv-vm-pool-manager"), binary("nv-sandbox-executor"),
              binary("nv-mount-copier")):
        if not os.path.exists(f):
            raise unittest.SkipTest(f"{f} is missing: build the guest image and the VM services")
    ROOT = tempfile.mkdtemp(prefix="nv-api-mounts-")
    STACK = Stack("ebpf-sentinel,vm-pool-manager,sandbox-executor,api",
                  {"NV_KERNEL": KERNEL, "NV_ROOTFS": ROOTFS, "NV_SIZE": "small", "NV_WARM": "1",
                   "NV_MAX": "3", "NV_MOUNT_ROOT": ROOT, "NV_API_ALLOW_MOUNTS": "true"})


def tearDownModule():
    if STACK:
        STACK.down()
    if ROOT:
        shutil.rmtree(ROOT, ignore_errors=True)


class ApiMounts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.url = STACK.url
        cls.a = STACK.key("tenant-a", "sandbox")
        cls.b = STACK.key("tenant-b", "sandbox")

    def test_rw_mount_synced_over_http_client(self):
        proj = os.path.join(ROOT, "proj")
        os.makedirs(proj)
        with open(os.path.join(proj, "input.txt"), "wb") as f:
            f.write(b"seven\n")
        mount = {"hostPath": proj, "guestPath": "/home/agent/proj", "readOnly": False}
        s, _, info = jcall(self.url, "POST", "/v1/sandboxes", key=self.a, body={"mounts": [mount]})
        self.assertEqual(s, 201, info)
        sid = info["id"]
        try:
            self.assertEqual([(m["hostPath"], m["guestPath"], m["readOnly"]) for m in info["mounts"]],
                             [(proj, "/home/agent/proj", False)])
            code = ("data = open('/home/agent/proj/input.txt', 'rb').read()\n"
                    "out = bytes(range(256)) * 3 + data\n"
                    "open('/home/agent/proj/out.bin', 'wb').write(out)\n"
                    "print(len(out))")
            s, _, r = jcall(self.url, "POST", f"/v1/sandboxes/{sid}/exec", key=self.a,
                            body={"language": "python", "code": code})
            self.assertEqual((s, r["exitCode"], r["stdout"]), (200, 0, "774\n"), r)
            self.assertFalse(os.path.exists(os.path.join(proj, "out.bin")))  # not before sync
            # Another tenant cannot sync it: the same answer as no such sandbox.
            s, _, b = jcall(self.url, "POST", f"/v1/sandboxes/{sid}/sync", key=self.b, body={})
            self.assertEqual((s, b["error"]["code"]), (404, "unknownSandbox"), b)
            s, _, r = jcall(self.url, "POST", f"/v1/sandboxes/{sid}/sync", key=self.a, body={})
            self.assertEqual(s, 200, r)
            want = bytes(range(256)) * 3 + b"seven\n"
            self.assertEqual(r, {"synced": [{"guestPath": "/home/agent/proj", "hostPath": proj,
                                             "filesWritten": 1, "bytesWritten": len(want),
                                             "filesRemoved": 0, "skipped": []}]})
            with open(os.path.join(proj, "out.bin"), "rb") as f:
                self.assertEqual(f.read(), want)
        finally:
            jcall(self.url, "DELETE", f"/v1/sandboxes/{sid}", key=self.a)

    def test_sdk_ro_mount_and_refusal(self):
        data = os.path.join(ROOT, "data")
        os.makedirs(data)
        with open(os.path.join(data, "x.txt"), "w") as f:
            f.write("read me\n")
        nv = neurovisor.Client(self.url, api_key=self.a)
        with neurovisor.Sandbox.create(
                nv, mounts=[neurovisor.Mount(data, "/home/agent/data")]) as sbx:
            self.assertTrue(sbx.info["mounts"][0]["readOnly"])
            r = sbx.exec("bash", "cat /home/agent/data/x.txt; echo no > /home/agent/data/x.txt")
            self.assertEqual(r.stdout, "read me\n")
            self.assertNotEqual(r.exit_code, 0)
            self.assertEqual(sbx.sync(), [])  # no read-write mount: nothing to copy out
        with open(os.path.join(data, "x.txt")) as f:
            self.assertEqual(f.read(), "read me\n")
        outside = tempfile.mkdtemp(prefix="nv-api-outside-")
        try:
            with self.assertRaises(neurovisor.MountRefused) as cm:
                neurovisor.Sandbox.create(nv, mounts=[{"hostPath": outside,
                                                       "guestPath": "/home/agent/o"}])
            self.assertEqual((cm.exception.status, cm.exception.code), (403, "mountRefused"))
            self.assertEqual(os.listdir(outside), [])
        finally:
            shutil.rmtree(outside, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
