"""The numbers in docs/models.md, measured on this machine from the built artifacts.

Sizes and benchmark scores come from the manifests; decode speed is one llama.cpp run per
quantization of the same model; training time from each family's `train.json`. Everything
missing is built first (`catalog.ensure`), so this also works on a cold cache, slowly.
"""

from __future__ import annotations

import json
import statistics

from baton_models import catalog
from baton_models.domains import DOMAINS
from baton_models.evaluate import decode_speed
from baton_models.gguf_export import QUANTIZATIONS
from baton_models.recipes import recipe

QUANTS_OF_V2 = ("F16", "Q8_0", "Q4_K_M", "TQ2_0", "TQ1_0")
TERNARY_DOMAIN = "software"


def _mean(artifact: catalog.Artifact) -> float:
    return statistics.fmean(artifact.manifest["benchmarkScores"].values())


def _versions_table() -> list[str]:
    lines = [
        "| domain | version | params | Q8_0 MB | mean score (Q8_0) | per suite |",
        "|---|---|---|---|---|---|",
    ]
    for domain in DOMAINS:
        for version in ("v1", "v2", "v3"):
            artifact = catalog.ensure(domain, version, "Q8_0")
            suites = artifact.manifest["benchmarkScores"]
            detail = ", ".join(
                f"{name.removeprefix(domain + '-')} {value:.3f}" for name, value in suites.items()
            )
            params = recipe(domain, version).shape.parameter_count()
            lines.append(
                f"| {domain} | {version} | {params / 1e6:.2f} M | {artifact.size_bytes / 1e6:.2f} | "
                f"{_mean(artifact):.3f} | {detail} |"
            )
    return lines


def _quantization_table() -> list[str]:
    lines = [
        "| domain (v2) | " + " | ".join(f"{q} MB / score" for q in QUANTS_OF_V2) + " |",
        "|---|" + "---|" * len(QUANTS_OF_V2),
    ]
    for domain in DOMAINS:
        cells = []
        for quant in QUANTS_OF_V2:
            artifact = catalog.ensure(domain, "v2", quant)
            cells.append(f"{artifact.size_bytes / 1e6:.2f} / {_mean(artifact):.3f}")
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    return lines


def _ternary_table() -> list[str]:
    rows = [
        ("v2 (F16 training), F16", catalog.ensure(TERNARY_DOMAIN, "v2", "F16")),
        ("v2 (F16 training), post-quantized TQ2_0", catalog.ensure(TERNARY_DOMAIN, "v2", "TQ2_0")),
        ("v2 (F16 training), post-quantized TQ1_0", catalog.ensure(TERNARY_DOMAIN, "v2", "TQ1_0")),
        ("v2-ternary (BitNet QAT), TQ2_0", catalog.ensure(TERNARY_DOMAIN, "v2-ternary", "TQ2_0")),
        ("v2-ternary (BitNet QAT), TQ1_0", catalog.ensure(TERNARY_DOMAIN, "v2-ternary", "TQ1_0")),
        ("v2-ternary (BitNet QAT), F16 export", catalog.ensure(TERNARY_DOMAIN, "v2-ternary", "F16")),
    ]
    reference = _mean(rows[0][1])
    lines = ["| model | MB | mean score | x F16 model |", "|---|---|---|---|"]
    for label, artifact in rows:
        score = _mean(artifact)
        lines.append(f"| {label} | {artifact.size_bytes / 1e6:.2f} | {score:.3f} | {score / reference:.2f} |")
    return lines


def _speed_table() -> list[str]:
    lines = ["| artifact | tok/s |", "|---|---|"]
    for version, quant in [("v2", q) for q in QUANTIZATIONS] + [
        ("v2-ternary", "TQ2_0"),
        ("v2-ternary", "TQ1_0"),
    ]:
        artifact = catalog.ensure(TERNARY_DOMAIN, version, quant)
        lines.append(f"| {TERNARY_DOMAIN}-{version} {quant} | {decode_speed(artifact.path):.0f} |")
    return lines


def _training_table() -> list[str]:
    lines = ["| family | steps trained | wall seconds (1 thread) |", "|---|---|---|"]
    seen = set()
    for domain in DOMAINS:
        for version in ("v2", "v2-ternary"):
            if version == "v2-ternary" and domain != TERNARY_DOMAIN:
                continue
            log = json.loads((catalog.recipe_dir(recipe(domain, version)) / "train.json").read_text())
            key = tuple(log["family"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"| {', '.join(key)} | {log['steps']} | {log['familySeconds']} |")
    return lines


def measurements_markdown() -> str:
    sections = [
        "### Versions (mean over the domain's suites)",
        "",
        *_versions_table(),
        "",
        "### Quantizations of v2 (post-training; TQ2_0/TQ1_0 of a full-precision model)",
        "",
        *_quantization_table(),
        "",
        f"### The 1.58-bit claim ({TERNARY_DOMAIN})",
        "",
        *_ternary_table(),
        "",
        "### Decode speed (llama.cpp, 2 threads, 128 tokens, best of 5 runs)",
        "",
        *_speed_table(),
        "",
        "### Training time",
        "",
        *_training_table(),
    ]
    return "\n".join(sections)
