"""`baton export`: the champion as Ollama or LM Studio runs it, so the model that won runs on a laptop as is.

- Ollama: a directory with the champion's GGUF and a Modelfile for `ollama create`: `FROM` the
  file, `TEMPLATE` the GGUF's chat template in Ollama's Go template form (when baton knows the
  translation; otherwise Ollama derives one from the GGUF itself, as it does for any GGUF), and
  `PARAMETER` lines with what baton's engine samples with when a request sets nothing, because
  Ollama's own defaults (temperature 0.8, top_p 0.9, repeat_penalty 1.1) would answer differently.
- LM Studio: `<out>/baton/<deployment>/<deployment>-<version>.<QUANT>.gguf`, the
  `<publisher>/<repository>/<file>` layout of its models directory.

The GGUF is the champion's verified artifact (`fetch_verified`: the digest is checked, an HTTP
artifact is downloaded first), copied byte for byte.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from baton.api import ModelDeployment
from baton.api.common import Artifact
from baton.evidence.releases import sha256_of_file
from baton_models.chat import CHAT_TEMPLATE
from baton_serving.artifacts import ArtifactError, fetch_verified, gguf_metadata
from baton_serving.config import FetchPolicy
from baton_serving.engines import LLAMA_CPP_SAMPLING_DEFAULTS
from baton_serving.openai_protocol import ChatCompletionRequest

# Chat templates (Jinja, as llama.cpp reads them from the GGUF) baton can write in Ollama's form.
# Ollama adds BOS itself, so the Go form starts after `bos_token`.
OLLAMA_TEMPLATES = {
    CHAT_TEMPLATE: (
        '{{- range .Messages }}{{- if eq .Role "user" }}### {{ .Content }}\n### Answer:\n'
        '{{ else if eq .Role "assistant" }}{{ .Content }}{{ "{eos}" }}{{ end }}{{- end }}'
    ),
}
PUBLISHER = "baton"


class ExportFormat(StrEnum):
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"


@dataclass(frozen=True)
class Champion:
    deployment: str
    version: str
    artifact: Artifact
    context_length: int


def champion_of(document: dict[str, Any]) -> Champion:
    """The serving champion of a ModelDeployment (wire form, from the API server or the state dir)."""
    deployment = ModelDeployment.model_validate(document)
    recorded = deployment.status.champion if deployment.status else None
    version, artifact = (
        (recorded.version, recorded.artifact)
        if recorded is not None
        else (deployment.spec.model.version, deployment.spec.model.artifact)
    )
    return Champion(deployment.metadata.name, version, artifact, deployment.spec.engine.context_length)


def gguf_name(champion: Champion) -> str:
    return f"{champion.deployment}-{champion.version}.{champion.artifact.quantization}.gguf"


def sampling_defaults() -> dict[str, float]:
    """What a request that sets no sampling option gets from baton's llama.cpp engine."""
    fields = ChatCompletionRequest.model_fields
    return {
        "temperature": fields["temperature"].default,
        "top_p": fields["top_p"].default,
        **LLAMA_CPP_SAMPLING_DEFAULTS,
    }


def modelfile(champion: Champion, metadata: dict[str, object]) -> str:
    """The Modelfile of the exported GGUF, from its metadata (chat template, vocabulary)."""
    lines = [
        f"# baton export of {champion.deployment}: champion {champion.version}, {champion.artifact.digest}",
        f"FROM ./{gguf_name(champion)}",
    ]
    template = OLLAMA_TEMPLATES.get(str(metadata.get("tokenizer.chat_template", "")))
    if template is not None:
        lines.append(f'TEMPLATE """{template.replace("{eos}", _eos_text(metadata))}"""')
    for name, value in sampling_defaults().items():
        lines.append(f"PARAMETER {name} {value:g}")
    lines.append(f"PARAMETER num_ctx {champion.context_length}")
    return "\n".join(lines) + "\n"


def _eos_text(metadata: dict[str, object]) -> str:
    tokens = metadata.get("tokenizer.ggml.tokens")
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    if isinstance(tokens, list) and isinstance(eos, int) and 0 <= eos < len(tokens):
        return json.dumps(str(tokens[eos]))[1:-1]
    return ""


def export(champion: Champion, fmt: ExportFormat, out: Path, policy: FetchPolicy) -> Path:
    """Write the champion in `fmt` under `out`, reading it under `policy`; returns the written GGUF's path."""
    if champion.artifact.adapter is not None:
        # The base alone would answer as another model; an export of both files is not built yet.
        raise ArtifactError(
            f"{champion.deployment}: the champion is a LoRA adapter over a base; only whole models export"
        )
    verified = fetch_verified(champion.artifact.uri, champion.artifact.digest, policy)
    target = out if fmt is ExportFormat.OLLAMA else out / PUBLISHER / champion.deployment
    target.mkdir(parents=True, exist_ok=True)
    gguf = target / gguf_name(champion)
    shutil.copyfile(verified.path, gguf)
    if sha256_of_file(gguf) != verified.digest:
        raise ArtifactError(f"{gguf}: the copy does not hash to {verified.digest}")
    if fmt is ExportFormat.OLLAMA:
        (target / "Modelfile").write_text(modelfile(champion, gguf_metadata(gguf)))
    return gguf
