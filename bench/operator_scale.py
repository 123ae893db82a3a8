"""Operator scale: 1,000 ModelDeployments across 10 pools on a real kube-apiserver, figures from one run.

Prints, against the goals of issue 6:
- time from operator start until every deployment is reconciled to Serving (goal <= 60 s);
- operator API writes per resource (goal <= 3), from the operator's own `baton_operator_api_writes`;
- operator peak RSS (goal <= 300 MB);
- time from a candidate being applied to its promotion, beyond the configured canary pauses
  (goal <= 10 %), measured on a few deployments while the other 1,000 exist.

No model runs here: the bench plays KubeRay's part by marking every application of each new
RayService generation RUNNING (what KubeRay or `baton pool-runner` report once Serve is up), so
the figures are the operator's own cost. Usage: `python bench/operator_scale.py [--deployments N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.controlplane import ControlPlane  # noqa: E402
from tests.testbed.processes import free_ports  # noqa: E402

from baton.k8s.rayservice import observe_revisions, serve_config  # noqa: E402

NAMESPACE = "bench"
DIGEST = "sha256:" + "ab" * 32
STEP_PAUSE_S = 5.0
STEPS = 3


def deployment(name: str, pool: str, *, timed: bool = False) -> dict:
    steps = [{"weight": w, "pause": f"{STEP_PAUSE_S:g}s", "minRequests": 0} for w in (10, 50, 90)]
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "domain": "medical",
            "pool": pool,
            "model": {
                "version": "v1",
                "artifact": {
                    "uri": f"file:///m/{name}.gguf",
                    "digest": DIGEST,
                    "quantization": "Q4_K_M",
                    "sizeBytes": 1_000_000,
                },
            },
            "rollout": {"steps": steps if timed else steps[:1]},
            "analysis": {"ungated": True},
        },
    }


def pool(name: str) -> dict:
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": {"workers": 4, "workerResources": {"cpu": "8", "memory": "64Gi"}},
    }


class KubeRayStandIn(threading.Thread):
    """Marks each new RayService generation's applications RUNNING, as KubeRay would once Serve is up.

    Driven by a watch, as KubeRay's controller is, so its own latency stays out of the figures.
    """

    def __init__(self, api: client.CustomObjectsApi) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            stream = watch.Watch().stream(
                self.api.list_namespaced_custom_object, "ray.io", "v1", NAMESPACE, "rayservices",
                timeout_seconds=30,
            )  # fmt: skip
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.report(event["object"])

    def report(self, body: dict) -> None:
        generation = body["metadata"]["generation"]
        if (body.get("status") or {}).get("observedGeneration") == generation:
            return
        apps = serve_config(body)["applications"]
        status = {
            "observedGeneration": generation,
            "serviceStatus": "Running",
            "numServeEndpoints": 1,
            "activeServiceStatus": {"applicationStatuses": {a["name"]: {"status": "RUNNING"} for a in apps}},
        }
        self.api.patch_namespaced_custom_object_status(
            "ray.io", "v1", NAMESPACE, "rayservices", body["metadata"]["name"], {"status": status},
            _content_type="application/merge-patch+json",
        )  # fmt: skip


def operator_metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "baton_operator_api_writes_total":
                figures[f"writes:{sample.labels['resource']}"] = sample.value
            elif sample.name == "process_resident_memory_bytes":
                figures["rss"] = sample.value
    return figures


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--timed", type=int, default=3, help="Deployments whose promotion is timed.")
    args = parser.parse_args()

    with ControlPlane() as plane:
        plane.apply(
            REPO / "manifests" / "crds", REPO / "manifests" / "third_party" / "rayservices.ray.io.yaml"
        )
        plane.kubectl("create", "namespace", NAMESPACE)
        config.load_kube_config(str(plane.kubeconfig))
        api = client.CustomObjectsApi()

        def create(body: dict) -> None:
            plural = "modelpools" if body["kind"] == "ModelPool" else "modeldeployments"
            api.create_namespaced_custom_object("baton.dev", "v1alpha1", NAMESPACE, plural, body)

        pools = [f"pool-{i}" for i in range(args.pools)]
        bodies = [pool(name) for name in pools]
        bodies += [deployment(f"md-{i:04d}", pools[i % args.pools]) for i in range(args.deployments)]
        timed = [f"timed-{i}" for i in range(args.timed)]
        bodies += [deployment(name, pools[0], timed=True) for name in timed]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as executor:
            list(executor.map(create, bodies))
        print(f"created {len(bodies)} resources in {time.monotonic() - started:.1f} s (not counted)")

        stand_in = KubeRayStandIn(api)
        stand_in.start()
        (metrics_port,) = free_ports(1)
        log = Path("/tmp/baton-operator-scale.log")  # outlives the control plane's work directory
        command = [
            sys.executable, "-m", "baton.cli", "operator",
            "--namespace", NAMESPACE, "--lease-namespace", NAMESPACE,
            "--metrics-port", str(metrics_port), "--endpoint-template", "http://127.0.0.1:9",
            "--no-auth",
        ]  # fmt: skip
        with log.open("wb") as out:
            operator = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=plane.env())
        started = time.monotonic()
        total = args.deployments + args.timed
        try:
            serving = 0
            while serving < total:
                time.sleep(0.5)
                items = api.list_namespaced_custom_object(
                    "baton.dev", "v1alpha1", NAMESPACE, "modeldeployments"
                )["items"]
                serving = sum((item.get("status") or {}).get("phase") == "Serving" for item in items)
                if time.monotonic() - started > 300:
                    stuck = {
                        item["metadata"]["name"]: (item.get("status") or {}).get("conditions")
                        for item in items
                        if (item.get("status") or {}).get("phase") != "Serving"
                    }
                    print(f"only {serving}/{total} Serving after 300 s; see {log}; not serving: {stuck}")
                    rays = api.list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayservices")[
                        "items"
                    ]
                    for ray in rays:
                        apps = [a["name"] for a in serve_config(ray)["applications"]]
                        reported = ((ray.get("status") or {}).get("activeServiceStatus") or {}).get(
                            "applicationStatuses", {}
                        )
                        print(
                            ray["metadata"]["name"], ray["metadata"]["generation"],
                            (ray.get("status") or {}).get("observedGeneration"), len(apps), len(reported),
                            [a for a in apps if any(a.startswith(f"{name}.") for name in stuck)],
                        )  # fmt: skip
                        for name in stuck:
                            if any(a.startswith(f"{name}.") for a in apps):
                                # what the operator's observation makes of the API's current RayService
                                print(" ", name, observe_revisions(name, ray))
                    break
            reconcile_all = time.monotonic() - started
            time.sleep(2)  # let trailing pool renders land before counting
            figures = operator_metrics(metrics_port)

            applied: dict[str, float] = {}
            for name in timed:
                candidate = {
                    "apiVersion": "baton.dev/v1alpha1",
                    "kind": "ModelCandidate",
                    "metadata": {"name": f"{name}-v2"},
                    "spec": {
                        "deployment": name,
                        "version": "v2",
                        "artifact": {
                            "uri": f"file:///m/{name}-v2.gguf",
                            "digest": DIGEST,
                            "quantization": "Q4_K_M",
                        },
                    },
                }
                api.create_namespaced_custom_object(
                    "baton.dev", "v1alpha1", NAMESPACE, "modelcandidates", candidate
                )
                applied[name] = time.monotonic()
            promoted: dict[str, float] = {}
            watching = watch.Watch()  # a watch, not polling: the bench must not load the 2 cores itself
            for event in watching.stream(
                api.list_namespaced_custom_object, "baton.dev", "v1alpha1", NAMESPACE, "modeldeployments",
                timeout_seconds=300,
            ):  # fmt: skip
                body = event["object"]
                name = body["metadata"]["name"]
                champion = (body.get("status") or {}).get("champion") or {}
                if name in applied and name not in promoted and champion.get("version") == "v2":
                    promoted[name] = time.monotonic() - applied[name]
                    if len(promoted) == len(timed):
                        watching.stop()
            if len(promoted) < len(timed):
                raise SystemExit(f"candidates not promoted after 300 s; see {log}")
            peak = peak_rss_bytes(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            stand_in.stopped.set()

    deployment_writes = figures.get("writes:modeldeployments", 0) + figures.get("writes:events", 0)
    all_writes = sum(value for key, value in figures.items() if key.startswith("writes:"))
    resources = args.deployments + args.timed + args.pools
    waits = STEP_PAUSE_S * STEPS
    overhead = statistics.median(promoted.values()) - waits
    print(
        json.dumps(
            {key: value for key, value in figures.items() if key.startswith("writes:")}, sort_keys=True
        )
    )
    print(f"reconcile all {total} deployments in {args.pools} pools: {reconcile_all:.1f} s (goal <= 60 s)")
    print(
        f"API writes per resource: {all_writes / resources:.2f} overall, "
        f"{deployment_writes / total:.2f} per ModelDeployment incl. its Events (goal <= 3)"
    )
    print(
        f"operator RSS: {figures.get('rss', 0) / 2**20:.0f} MB now, "
        f"{peak / 2**20:.0f} MB peak (goal <= 300 MB)"
    )
    print(
        f"candidate applied -> promoted: median {statistics.median(promoted.values()):.2f} s "
        f"for {waits:.0f} s of "
        f"configured pauses: {overhead:.2f} s beyond = {overhead / waits:.1%} (goal <= 10 %) "
        f"[{', '.join(f'{v:.2f}' for v in sorted(promoted.values()))}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
