"""`ModelPool`: one Ray Serve pool (a KubeRay `RayService`) into which many small models are packed.

The pool owns the capacity budget; deployments that name it are rendered together into one
Serve application, and the operator reports `Unschedulable` when they no longer fit.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from baton import __version__
from baton.api.common import (
    QUANTITY_PATTERN,
    BatonModel,
    Condition,
    PrinterColumn,
    Resource,
    Rule,
    with_rules,
)

# The pool image images/pool.Containerfile builds, tagged with this release (the chart's appVersion).
DEFAULT_RAY_IMAGE = f"baton/pool:{__version__}"
# Where every Ray pod sees the pool's model volume: the chart's default fetch root (`fetch.localRoots`),
# so an artifact URI `/models/<file>` names the same file in the head and in every worker.
MODELS_PATH = "/models"
# Where a Ray pod keeps the http(s) artifacts it downloaded and verified (`artifactCache`).
ARTIFACT_CACHE_PATH = "/var/cache/baton"
# Kubernetes object names (RFC 1123 subdomains) that a pool's volumes refer to.
_OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class Accelerator(StrEnum):
    CPU = "cpu"
    NVIDIA_GPU = "nvidia-gpu"


class WorkerResources(BatonModel):
    """Resources of one Ray worker pod."""

    cpu: str = Field(default="2", pattern=QUANTITY_PATTERN, description="CPU cores per worker (quantity).")
    memory: str = Field(default="8Gi", pattern=QUANTITY_PATTERN, description="Memory per worker (quantity).")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker.")


class ClaimSource(BatonModel):
    """A PersistentVolumeClaim in the pool's namespace (Kubernetes' `persistentVolumeClaim` source)."""

    claim_name: str = Field(
        pattern=_OBJECT_NAME, max_length=253, description="Name of the PersistentVolumeClaim."
    )


class NFSSource(BatonModel):
    """An NFS export (Kubernetes' `nfs` volume source)."""

    server: str = Field(
        min_length=1, max_length=253, description="Host name or IP address of the NFS server."
    )
    path: str = Field(pattern=r"^/", max_length=4096, description="Path exported by the NFS server.")


class CSISource(BatonModel):
    """A volume of a CSI driver (Kubernetes' `csi` volume source), e.g. an object-store or cache driver."""

    driver: str = Field(
        pattern=r"^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?$",
        max_length=63,
        description="Name of the CSI driver, as the cluster registered it.",
    )
    volume_attributes: dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=4096)]] = (
        Field(default_factory=dict, max_length=32, description="Driver-specific attributes of the volume.")
    )
    fs_type: str | None = Field(
        default=None, max_length=32, description="File system type (e.g. `ext4`); unset: the driver's."
    )


class ImageSource(BatonModel):
    """An OCI image or artifact whose files are the volume (Kubernetes' `image` volume source, 1.33+):
    models shipped through a registry, pulled and cached by the node like any image."""

    reference: str = Field(
        min_length=1, max_length=1024, description="Image reference, e.g. `registry/models:v2`."
    )
    pull_policy: Literal["Always", "Never", "IfNotPresent"] | None = Field(
        default=None, description="`Always`, `Never` or `IfNotPresent` (Kubernetes' default for the tag)."
    )


class ModelVolume(BatonModel):
    """A read-only volume of model files, mounted at `/models` in the Ray head and every worker.

    Exactly one source, spelt as in a Kubernetes pod's `volumes[]` entry. Artifact URIs name files
    under `/models`; the data plane still checks each file's sha256 before it loads it.
    """

    model_config = with_rules(
        Rule(
            cel="[has(self.persistentVolumeClaim), has(self.nfs), has(self.csi), has(self.image)]"
            ".filter(x, x).size() == 1",
            holds=lambda self: (
                (self.persistent_volume_claim, self.nfs, self.csi, self.image).count(None) == 3
            ),
            message="a model volume names exactly one of persistentVolumeClaim, nfs, csi, image",
        )
    )

    persistent_volume_claim: ClaimSource | None = Field(
        default=None,
        description="A claim in the pool's namespace (ReadOnlyMany or ReadWriteMany for "
        "pods on several nodes).",
    )
    nfs: NFSSource | None = Field(default=None, description="An NFS export.")
    csi: CSISource | None = Field(default=None, description="A CSI driver's volume.")
    image: ImageSource | None = Field(default=None, description="An OCI image's files.")


class ArtifactCache(BatonModel):
    """Where the Ray pods keep http(s) artifacts they downloaded and verified, at `/var/cache/baton`.

    A file lands there only after its sha256 matched, and is hashed again before each load, so
    another replica or a restarted one reuses it without downloading it again.
    """

    persistent_volume_claim: ClaimSource | None = Field(
        default=None,
        description="A claim to keep downloads in, shared by the pool's pods and kept across pod "
        "restarts (ReadWriteMany for pods on several nodes). Unset: an emptyDir per pod.",
    )
    size_limit: str = Field(
        default="20Gi",
        pattern=QUANTITY_PATTERN,
        description="Size limit of the per-pod emptyDir (unused with a claim).",
    )


class ModelPoolSpec(BatonModel):
    """Capacity and placement of a pool."""

    model_config = with_rules(
        Rule(
            cel="self.accelerator != 'nvidia-gpu' || self.workerResources.gpus > 0",
            holds=lambda self: self.accelerator != Accelerator.NVIDIA_GPU or self.worker_resources.gpus > 0,
            message="an nvidia-gpu pool needs workerResources.gpus > 0",
            field_path=".workerResources.gpus",
        )
    )

    accelerator: Accelerator = Field(
        default=Accelerator.CPU, description="`cpu` (llama.cpp) or `nvidia-gpu` (vLLM)."
    )
    workers: int = Field(default=1, ge=1, le=256, description="Number of Ray worker pods.")
    worker_resources: WorkerResources = Field(
        default_factory=WorkerResources, description="Resources per worker."
    )
    ray_image: str = Field(
        default=DEFAULT_RAY_IMAGE,
        min_length=1,
        description="Container image of the Ray head and workers: Ray Serve with `baton_serving` and "
        "llama-cpp-python (baton's pool image, images/pool.Containerfile).",
    )
    memory_headroom_percent: int = Field(
        default=20, ge=0, le=90, description="Share of pool memory kept free when packing models."
    )
    model_volume: ModelVolume | None = Field(
        default=None,
        description="Model files mounted read-only at `/models` in the head and every worker (a PVC, "
        "NFS, CSI or image volume); artifact URIs `/models/...` read from it.",
    )
    artifact_cache: ArtifactCache = Field(
        default_factory=ArtifactCache,
        description="Where http(s) artifacts are downloaded to and reused from (an emptyDir per pod, "
        "or a claim).",
    )
    key_secrets: list[Annotated[str, Field(pattern=_OBJECT_NAME, max_length=253)]] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets in the pool's namespace whose entries are client API key files (the entry "
        "name is the key id; docs/security.md). Mounted into every Ray pod beside the operator's own "
        "benchmark key (id `baton-operator`, reserved); a key added to a Secret applies within a minute.",
    )
    ingress_replicas: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Replicas of the pool's OpenAI ingress (every domain of the pool goes through them).",
    )


class ModelPoolStatus(BatonModel):
    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    ray_service: str | None = Field(
        default=None, description="Name of the RayService rendered for this pool."
    )
    deployments: int = Field(default=0, ge=0, description="ModelDeployments packed into the pool.")
    memory_requested_bytes: int = Field(default=0, ge=0, description="Memory the packed revisions need.")
    memory_capacity_bytes: int = Field(default=0, ge=0, description="Usable memory of the pool.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="`Ready`, `PodsReady` (the pool's Ray pods; a pod that cannot start names the "
        "kubelet's reason, e.g. ImagePullBackOff, and keeps the pool from Ready), `Unschedulable`, "
        "with observedGeneration.",
    )


class ModelPool(Resource):
    kind_name: ClassVar[str] = "ModelPool"
    plural: ClassVar[str] = "modelpools"
    short_names: ClassVar[tuple[str, ...]] = ("mp",)
    description: ClassVar[str] = (
        "A Ray Serve pool (KubeRay RayService) into which many small models are packed."
    )
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(
            name="Accelerator", type="string", json_path=".spec.accelerator", description="Accelerator."
        ),
        PrinterColumn(
            name="Workers", type="integer", json_path=".spec.workers", description="Ray worker pods."
        ),
        PrinterColumn(
            name="Models", type="integer", json_path=".status.deployments", description="Deployments."
        ),
        PrinterColumn(
            name="Ready",
            type="string",
            json_path='.status.conditions[?(@.type=="Ready")].status',
            description="Ready condition.",
        ),
    )

    kind: Literal["ModelPool"] = Field(default="ModelPool", description="ModelPool.")
    spec: ModelPoolSpec = Field(default_factory=ModelPoolSpec, description="Capacity and placement.")
    status: ModelPoolStatus | None = Field(default=None, description="Written by the operator.")
