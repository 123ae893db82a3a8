"""`ModelPool`: one Ray Serve pool (a KubeRay `RayService`) into which many small models are packed.

The pool owns the capacity budget; deployments that name it are rendered together into one
Serve application, and the operator reports `Unschedulable` when they no longer fit.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

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


class Accelerator(StrEnum):
    CPU = "cpu"
    NVIDIA_GPU = "nvidia-gpu"


class WorkerResources(BatonModel):
    """Resources of one Ray worker pod."""

    cpu: str = Field(default="2", pattern=QUANTITY_PATTERN, description="CPU cores per worker (quantity).")
    memory: str = Field(default="8Gi", pattern=QUANTITY_PATTERN, description="Memory per worker (quantity).")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker.")


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
