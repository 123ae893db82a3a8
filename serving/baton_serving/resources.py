"""Replica resources derived from the artifact, so many small models pack into one pool.

A 20 MB test model and a 5 GB production model should not reserve the same CPU and memory: when a
revision leaves its resources unset, the reservation follows the weights' size. The memory figure is
the one both planes use: Ray reserves it per replica, and the operator packs revisions into a pool by
it (`baton.rollout.render`), so a revision the operator declares as fitting is one Ray can place.
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
# What an artifact whose size is not declared is assumed to weigh.
UNKNOWN_ARTIFACT_BYTES = 2 << 30
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
    options["memory"] = replica_memory_bytes(revision)
    return options


def replica_memory_bytes(revision: RevisionSpec) -> int:
    """Memory one engine replica of `revision` needs (Ray's `memory` reservation)."""
    if revision.resources.memory_bytes is not None:
        return revision.resources.memory_bytes
    size = revision.artifact.size_bytes or UNKNOWN_ARTIFACT_BYTES
    # An adapter's base is counted whole in each replica: the kernel shares a memory-mapped base
    # between processes, but not every weight type stays mapped (Q4_K is repacked into private memory).
    adapter = revision.artifact.adapter
    if adapter is not None:
        size += adapter.size_bytes or UNKNOWN_ARTIFACT_BYTES
    return math.ceil(size * WEIGHTS_MEMORY_FACTOR) + RUNTIME_OVERHEAD_BYTES
