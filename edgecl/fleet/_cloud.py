"""The real cloud service for a simulation: ``edgecl serve`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError

ENROLLMENT_KEY = "edgecl-simulation"


class CloudProcess:
    """Starts ``edgecl serve`` (own storage, port picked by the OS) and stops it with
    SIGTERM (graceful), as an operator would run it. ``settings`` are
    ``EDGECL_CLOUD_<SECTION>_<KEY>`` overrides, e.g. ``{"learning_group_by": "group"}``."""

    def __init__(self, storage: str | os.PathLike[str], *, variant: str = "full",
                 home: str | None = None, settings: dict[str, Any] | None = None,
                 start_timeout: float = 180.0) -> None:
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if home:
            env["EDGECL_HOME"] = str(home)
        overrides = {"auth_enrollment_key": ENROLLMENT_KEY, "teacher_zoo": variant,
                     "storage_dir": str(self.storage / "data"),
                     "server_address": "127.0.0.1:0", "metrics_port": "-1",
                     "log_format": "json", **(settings or {})}
        env.update({f"EDGECL_CLOUD_{k.upper()}": str(v) for k, v in overrides.items()})
        self._out = open(self.storage / "serve.out", "w+b")
        self._err = open(self.storage / "serve.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgecl", "serve"], env=env,
                                     stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + start_timeout
        info: dict[str, Any] | None = None
        while time.monotonic() < deadline and info is None:
            if self.proc.poll() is not None:
                self.close()
                raise ConfigError(f"edgecl serve exited with {self.proc.returncode}; see "
                                  f"{self.storage / 'serve.log'}")
            line = (self.storage / "serve.out").read_bytes().split(b"\n")[0]
            if line.endswith(b"}"):
                info = json.loads(line)
            else:
                time.sleep(0.1)
        if info is None:
            self.close()
            raise ConfigError("edgecl serve did not start in time")
        self.target: str = info["serving"]
        self.public_key: bytes = Path(info["public_key"]).read_bytes()
        #: The service's dashboard address (None: not served).
        self.dashboard: str | None = info.get("dashboard")

    def close(self, timeout: float = 60.0) -> None:
        """SIGTERM, wait for the graceful stop (kill after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()

    def __enter__(self) -> CloudProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
