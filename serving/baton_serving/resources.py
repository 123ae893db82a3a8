"""Replica resources derived from the artifact, so many small models pack into one pool.

A 20 MB test model and a 5 GB production model should not reserve the same CPU and memory: when a
revision leaves its resources unset, the reservation follows the weights' size.
"""

from __future__ import annotations

import math
from typing import Any

from baton_serving.config import RevisionSpec

MIB = 1 << 20
# The Python process, llama.cpp's compute buffers and the KV cache of a small context.
RUNTIME_OVERHEAD_BYTES = 256 * MIB
# Weights are memory-mapped and read once; the rest of the working set grows with them.
WEIGHTS_MEMORY_FACTOR = 1.2
# An artifact this large keeps all of its decoding threads busy; smaller ones reserve a share.
FULL_CPU_ARTIFACT_BYTES = 512 * MIB
MIN_CPU_SHARE = 0.05


def replica_actor_options(revision: RevisionSpec) -> dict[str, Any]:
    """Ray actor options (`num_cpus`, `num_gpus`, `memory`) of one engine replica of `revision`."""
    size = revision.artifact.size_bytes
    requested = revision.resources
    num_cpus = requested.num_cpus
    if num_cpus is None:
        share = 1.0 if size is None else min(1.0, size / FULL_CPU_ARTIFACT_BYTES)
        num_cpus = round(max(MIN_CPU_SHARE, revision.threads * share), 2)
    options: dict[str, Any] = {"num_cpus": num_cpus}
    if requested.num_gpus:
        options["num_gpus"] = requested.num_gpus
    memory = requested.memory_bytes
    if memory is None and size is not None:
        memory = math.ceil(size * WEIGHTS_MEMORY_FACTOR) + RUNTIME_OVERHEAD_BYTES
    if memory is not None:
        options["memory"] = memory
    return options
