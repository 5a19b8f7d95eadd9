"""Python client of NeuroVisor's HTTP API (nv-api). Standard library only.

    from neurovisor import Client, Sandbox, Task
    nv = Client("http://127.0.0.1:8420", api_key="nvk_...")
    with Sandbox.create(nv) as sbx:
        print(sbx.run_code("print(6*7)").stdout)
"""
from .client import Client, ExecResult
from .errors import (AuthError, BadRequest, Conflict, MountQuota, MountRefused, NeuroVisorError,
                     NotFound, RateLimited, ServerError)
from .sandbox import Mount, Sandbox
from .task import Task

__all__ = ["Client", "ExecResult", "Mount", "Sandbox", "Task", "NeuroVisorError", "AuthError",
           "NotFound", "RateLimited", "BadRequest", "Conflict", "ServerError", "MountRefused",
           "MountQuota"]
__version__ = "0.1.0"
