"""The named ports of the Ray pods KubeRay starts for a pool: what a PodMonitor selects, and what
KubeRay builds the head's Service from once the template declares any port."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.k8s.test_pool_volumes import pods, pool, rendered

pytestmark = pytest.mark.unit

POD_MONITOR = Path(__file__).resolve().parents[3] / "charts" / "baton" / "templates" / "podmonitor.yaml"


def ports(pod: dict) -> dict[str, int]:
    (container,) = pod["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def test_every_ray_pod_declares_the_port_the_charts_pod_monitor_scrapes() -> None:
    # KubeRay adds only `metrics` to a pod on its own: a port the template does not name is no target.
    scraped = re.findall(r"^\s*- port: (\S+)$", POD_MONITOR.read_text(), re.MULTILINE)
    assert scraped == ["serve"]
    for pod in pods(rendered(pool())):
        assert ports(pod)["serve"] == 8000


def test_the_head_declares_the_ports_kuberay_reaches_it_by() -> None:
    head, *workers = pods(rendered(pool()))
    # Workers join through the head Service's `gcs-server` port; KubeRay deploys `serveConfigV2`
    # through its `dashboard` port. Both would be missing from the Service if the head named only `serve`.
    assert {"gcs-server": 6379, "dashboard": 8265}.items() <= ports(head).items()
    assert workers and all(set(ports(worker)) == {"serve", "metrics"} for worker in workers)
