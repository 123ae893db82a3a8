"""A real Prometheus (Debian package) on a free loopback port, scraping the targets a test names.

Metric and alert tests query the same server an SRE would, with a 1 s scrape interval so a test sees
fresh samples within seconds. The generated configuration is checked with promtool before start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.testbed import binaries
from tests.testbed.processes import free_ports, http_ok, spawn, terminate, wait_ready

READY_TIMEOUT_S = 120.0


class Prometheus:
    """Prometheus scraping `targets` ("host:port") as job `job`; optional alerting/recording rule files."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        job: str = "baton",
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        rule_files: Sequence[str | Path] = (),
        workdir: Path | None = None,
        tied_to_parent: bool = True,
    ) -> None:
        self.targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(rule).resolve() for rule in rule_files]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baton-prometheus-"))
        self.tied_to_parent = tied_to_parent
        self.config = self.workdir / "prometheus.yml"
        self.log = self.workdir / "prometheus.log"
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(rule) for rule in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    def start(self) -> str:
        """Writes and checks the configuration, starts Prometheus, waits for /-/ready; returns its URL."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        check = subprocess.run(
            [str(binaries.system("promtool")), "check", "config", str(self.config)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ValueError(f"{self.config}: promtool check config failed:\n{check.stdout}{check.stderr}")
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self._process = spawn(
            [
                binaries.system("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            self.log,
            tied_to_parent=self.tied_to_parent,
        )
        try:
            wait_ready(
                "prometheus", self._process, self.log, lambda: http_ok(f"{self.url}/-/ready"), READY_TIMEOUT_S
            )
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        return self.url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, *, remove_workdir: bool = True) -> None:
        if self._process is not None:
            terminate(self._process.pid)
            self._process = None
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop(remove_workdir=error is None)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data` of a successful answer, raises with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples ({"metric": {...}, "value": [ts, "v"]})."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Polls an instant query until it returns samples (a scrape or rule evaluation has happened)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus at {self.url}: no samples for {expr!r} after {timeout:.0f} s")
            time.sleep(0.5)
        return result
