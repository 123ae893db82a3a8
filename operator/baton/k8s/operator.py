"""`baton operator`: kopf wiring for the controller, and the process entry point with leader election.

Only `on.event` handlers are used for the baton kinds (and for the pools' Ray pods): they keep
no handler state on the objects, so the operator's writes to a ModelDeployment are its status
alone (the write budget the scale benchmark measures). The one `on.delete` handler is on
ModelPool: its finalizer lets the operator delete the pool's RayService before the pool
disappears (owner references do the same where a garbage collector runs; the test bed has none).
kopf's own Events and progress annotations are switched off; the controller posts its own Events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from baton.api.common import GROUP, VERSION
from baton.k8s.controller import Controller, Settings
from baton.k8s.health import Health
from baton.k8s.kube import (
    INFERENCE_SERVICES,
    KSERVE_GROUP,
    KSERVE_VERSION,
    NETWORK_GROUP,
    NETWORK_POLICIES,
    NETWORK_VERSION,
    RAY_GROUP,
    RAY_SERVICES,
    RAY_VERSION,
    READ_TIMEOUT_S,
    Kube,
    load_config,
)
from baton.k8s.leader import LeaseElector
from baton.k8s.pools import PODS
from baton.k8s.rayservice import KUBERAY_POD_LABELS, POOL_LABEL, network_policy_name

log = logging.getLogger("baton.operator")
BATON_PLURALS = ("modelpools", "modeldeployments", "modelcandidates", "modelsources", "benchmarks")


def build_registry(
    controller: Controller, *, namespace: str | None, watch_kserve: bool
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    plurals = {plural: (GROUP, VERSION) for plural in BATON_PLURALS}
    plurals["rayservices"] = (RAY_GROUP, RAY_VERSION)
    if watch_kserve:
        plurals["inferenceservices"] = (KSERVE_GROUP, KSERVE_VERSION)

    def record(plural: str):
        async def handler(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
            # Async, so it runs on the loop that owns the controller's queue (sync ones run in threads).
            controller.observed(plural, event.get("type"), dict(body))

        return handler

    for plural in BATON_PLURALS:
        kopf.on.event(GROUP, VERSION, plural, registry=registry)(record(plural))
    kopf.on.event(RAY_GROUP, RAY_VERSION, RAY_SERVICES, registry=registry)(record("rayservices"))
    if watch_kserve:
        kopf.on.event(KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES, registry=registry)(
            record("inferenceservices")
        )

    # The Ray pods KubeRay starts for a pool: one that cannot start shows in the pool's conditions.
    # kopf filters labels client-side (its watch has no label selector), so every pod in the
    # watched namespaces is streamed, and only these reach the handler.
    @kopf.on.event("", "v1", PODS, labels={POOL_LABEL: kopf.PRESENT, **KUBERAY_POD_LABELS}, registry=registry)
    async def pod_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
        controller.observed(PODS, event.get("type"), dict(body))
        controller.schedule_render(body.metadata.namespace, body.metadata.labels[POOL_LABEL])

    @kopf.on.delete(GROUP, VERSION, "modelpools", registry=registry)
    def delete_ray_service(name: str, namespace: str, **_: Any) -> None:
        controller.kube.delete(RAY_GROUP, RAY_VERSION, RAY_SERVICES, namespace, name)  # the pool's RayService
        # The fence goes last: the Ray pods never run without it.
        controller.kube.delete(
            NETWORK_GROUP, NETWORK_VERSION, NETWORK_POLICIES, namespace, network_policy_name(name)
        )

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="baton.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="baton.dev")
        # kopf's own calls get timeouts too: no API call may hang, not even a watch whose
        # connection died silently (the server ends each watch after 300 s; the client gives up later).
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = settings.networking.connect_timeout = 5
        settings.networking.request_timeout = READ_TIMEOUT_S
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per watch event otherwise
        # Watching one named namespace, kopf would still watch Namespace objects (where it may list
        # them) and stop every watcher in a namespace it takes for gone: marked for deletion, with
        # conditions, none True. Since Kubernetes 1.34 (ordered namespace deletion) that is also what a
        # namespace says while its pods terminate, before its other objects are even deleted, so the
        # ModelPool's deletion went unseen and kopf's finalizer held the namespace forever. One named
        # namespace needs no scanning; the price: CRDs installed later are seen after a restart.
        settings.scanning.disabled = namespace is not None
        # Startup activities finish before kopf starts listing, so kopf's listing is never older.
        await controller.prime(namespace, plurals)
        asyncio.get_running_loop().create_task(controller.run(namespace))

    return registry


def run_operator(
    settings: Settings,
    *,
    namespace: str | None,
    lease_namespace: str,
    watch_kserve: bool,
    elect: bool = True,
    identity: str | None = None,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    health: Health | None = None,
) -> None:
    """Block until leader (unless `elect` is off), then reconcile until stopped, beating `health`."""
    health = health or Health()
    load_config()
    kube = Kube()
    if elect:
        elector = LeaseElector(kube, lease_namespace, identity=identity)
        elector.acquire()
        kube.guard = elector.ensure_leading  # from here on, no write without a fresh Lease
    health.leading()
    controller = Controller(kube, settings)
    registry = build_registry(controller, namespace=namespace, watch_kserve=watch_kserve)
    main = kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace else (),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=controller,
    )
    asyncio.run(health.beating(main, controller.work.processing.values))
