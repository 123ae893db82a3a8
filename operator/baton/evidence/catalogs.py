"""Where people already keep models: an Ollama store, LM Studio's models directory, a hub repository.

Each reader turns one of these layouts into the same `Discovery` the directory and HTTP index
sources produce, so the poller, the naming convention and the candidate documents are shared:

- Ollama (`server/internal/manifest`, `types/model/name.go` upstream): a tag is a JSON manifest at
  `manifests/<host>/<namespace>/<model>/<tag>`; its `application/vnd.ollama.image.model` layer is
  the GGUF, stored as `blobs/sha256-<hex>`. Ollama downloads into `...-partial` blobs and writes the
  manifest last, so a manifest whose blob exists only partially is a pull in progress, left for the
  next poll. The digest is in the manifest, and the blob is hashed here before it is offered: a blob
  whose bytes are not its name is refused, as is a manifest naming a blob that is not there.
- LM Studio: `<models>/<publisher>/<repository>/<file>.gguf`, the hub's file names.
- Hugging Face hub or a mirror (`huggingface_hub`): the revision's commit and each file's LFS sha256
  as the hub records them; the candidate's URI is the file at that commit, and the data plane
  verifies the bytes it downloads against the recorded sha256 (a mismatch fails the candidate).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from baton.api import ModelSource
from baton.api.candidate import OLLAMA_TAG_PATTERN, ModelSourceSpec
from baton.evidence.releases import (
    DigestCache,
    Discovery,
    DiscoveryError,
    Refused,
    Rejection,
    Release,
    directory_releases,
    index_releases,
    quantization_named,
    relative_parts,
    settled_files,
    split_quantization,
    under_root,
    version_and_quantization,
    version_name,
)
from baton_serving import fetch
from baton_serving.config import FetchPolicy
from baton_serving.wire import DIGEST_PATTERN

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
# What a bare `ollama pull medical` means (types/model/name.go).
OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE = "registry.ollama.ai", "library"
_OLLAMA_TAG = re.compile(OLLAMA_TAG_PATTERN)
# Manifests and config blobs are a few hundred bytes; anything this large is not one.
MAX_MANIFEST_BYTES = 1 << 20
# `model-00001-of-00003.gguf`: one file of a split model, which the engine cannot load alone.
_SPLIT_PART = re.compile(r"-\d{5}-of-\d{5}\.gguf$")
HUB_TIMEOUT_SECONDS = 30.0


def discover(source: ModelSource, digests: DigestCache, policy: FetchPolicy) -> Discovery:
    """Every release the source offers now, and those it refuses, read under `policy` (raises when
    the source cannot be read, or lies outside what the policy allows)."""
    spec = source.spec
    if spec.directory is not None:
        return directory_releases(spec, digests, fetch.local_path(spec.directory.path, policy))
    if spec.http is not None:
        return index_releases(spec, policy)
    if spec.ollama is not None:
        return ollama_releases(spec, digests, fetch.local_path(spec.ollama.path, policy))
    if spec.lmstudio is not None:
        return lmstudio_releases(spec, digests, fetch.local_path(spec.lmstudio.path, policy))
    assert spec.huggingface is not None
    # huggingface_hub opens its own connections, so the address is checked here, not pinned.
    fetch.checked_address(spec.huggingface.endpoint, policy)
    return hub_releases(spec)


# --- Ollama ----------------------------------------------------------------------------------------


class _Layer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    media_type: str = Field(alias="mediaType", max_length=256, description="What the layer holds.")
    digest: str = Field(pattern=DIGEST_PATTERN, description="sha256 of the blob.")


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    config: _Layer | None = Field(default=None, description="The model's config blob.")
    layers: list[_Layer] = Field(max_length=64, description="Weights, template, parameters, license.")


def ollama_name(model: str) -> tuple[str, str, str]:
    """`medical` -> (`registry.ollama.ai`, `library`, `medical`), as Ollama completes a short name."""
    parts = model.split("/")
    host, namespace, name = [OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    return host, namespace, name


def ollama_releases(spec: ModelSourceSpec, digests: DigestCache, root: Path) -> Discovery:
    """Every tag of the model in the store at `root`; non-moving tags first, so a version wins its digest."""
    assert spec.ollama is not None
    if not root.is_dir():
        raise DiscoveryError(f"{root}: no Ollama store there")
    tags = under_root(root, "manifests", *ollama_name(spec.ollama.model))
    found = Discovery()
    if not tags.is_dir():
        return found  # nothing pulled yet
    moving = set(spec.ollama.moving_tags)
    for manifest in sorted(settled_files(tags, "*"), key=lambda path: (path.name in moving, path.name)):
        try:
            release = _ollama_release(spec, root, manifest, digests)
        except Refused as refusal:
            found.rejected.append(Rejection(manifest.name[:80], refusal.reason, str(refusal)))
            continue
        if release is not None:
            found.releases.append(release)
    return found


def _ollama_release(
    spec: ModelSourceSpec, root: Path, manifest: Path, digests: DigestCache
) -> Release | None:
    """The release of one tag; None while its pull is still in progress."""
    assert spec.ollama is not None
    tag = manifest.name
    if not _OLLAMA_TAG.match(tag):
        raise Refused("BadName", "not an Ollama tag")
    layers = _read_manifest(under_root(manifest.parent, tag))
    models = [layer for layer in layers.layers if layer.media_type == OLLAMA_MODEL_LAYER]
    if len(models) != 1:
        raise Refused("BadManifest", f"the manifest has {len(models)} model layers, not one")
    digest = models[0].digest
    blob = _blob(root, digest, digests)
    if blob is None:
        return None
    rest, quantization = split_quantization(tag)
    quantization = (
        quantization
        or (_file_type(root, layers.config.digest, digests) if layers.config is not None else None)
        or quantization_named(spec.quantization)
    )
    if quantization is None:
        raise Refused(
            "UnknownQuantization", "neither the tag, the model's config nor the source names a quantization"
        )
    hex_digest = digest.removeprefix("sha256:")
    version = version_name(
        spec.deployment, f"{tag}-{hex_digest[:12]}" if tag in spec.ollama.moving_tags else rest
    )
    if not version:
        raise Refused("BadName", "no version in the tag")
    return Release(version, blob.as_uri(), digest, quantization, blob.stat().st_size)


def _read_manifest(path: Path) -> _Manifest:
    with path.open("rb") as stream:
        raw = stream.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise Refused("BadManifest", f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return _Manifest.model_validate_json(raw)
    except ValidationError as error:
        where = ".".join(map(str, error.errors()[0]["loc"])) or "the document"
        raise Refused("BadManifest", f"not an Ollama manifest (at {where})") from None


def _blob(root: Path, digest: str, digests: DigestCache) -> Path | None:
    """The verified blob of `digest`; None while it is still being pulled."""
    name = "sha256-" + digest.removeprefix("sha256:")
    blob = under_root(root, "blobs", name)
    if not blob.is_file():
        if any(blob.parent.glob(f"{name}-partial*")):
            return None
        raise Refused("MissingBlob", f"the manifest names blob {name[:19]}…, which is not in the store")
    if digests.digest(blob) != digest:
        raise Refused("DigestMismatch", f"blob {name[:19]}… does not hash to its name")
    return blob


def _file_type(root: Path, digest: str, digests: DigestCache) -> Any:
    """The quantization Ollama recorded in the model's config blob (`file_type`), if any."""
    blob = _blob(root, digest, digests)
    if blob is None or blob.stat().st_size > MAX_MANIFEST_BYTES:
        return None
    try:
        config = json.loads(blob.read_bytes())
    except ValueError:
        return None
    return quantization_named(config.get("file_type")) if isinstance(config, dict) else None


# --- LM Studio -------------------------------------------------------------------------------------


def lmstudio_releases(spec: ModelSourceSpec, digests: DigestCache, root: Path) -> Discovery:
    """Every settled GGUF of one repository in LM Studio's models directory at `root`."""
    assert spec.lmstudio is not None
    if not root.is_dir():
        raise DiscoveryError(f"{root}: no LM Studio models directory there")
    repository = under_root(root, spec.lmstudio.repository)
    found = Discovery()
    if not repository.is_dir():
        return found
    for path in settled_files(repository, spec.lmstudio.pattern):
        try:
            real = under_root(root, spec.lmstudio.repository, path.name)
            version, quantization = _file_release(spec, path.name)
        except Refused as refusal:
            found.rejected.append(Rejection(path.name[:80], refusal.reason, str(refusal)))
            continue
        found.releases.append(
            Release(version, real.as_uri(), digests.digest(real), quantization, real.stat().st_size)
        )
    return found


def _file_release(spec: ModelSourceSpec, filename: str) -> tuple[str, Any]:
    """Version and quantization of a GGUF named the hub's way; refused if either is missing."""
    if _SPLIT_PART.search(filename):
        raise Refused("SplitModel", "one part of a split GGUF; the engine loads single-file models")
    try:
        version, quantization = version_and_quantization(spec.deployment, filename)
    except DiscoveryError as error:
        raise Refused("BadName", str(error)) from None
    quantization = quantization or quantization_named(spec.quantization)
    if quantization is None:
        raise Refused("UnknownQuantization", "neither the file name nor the source names a quantization")
    return version, quantization


# --- Hugging Face hub ------------------------------------------------------------------------------


def hub_releases(spec: ModelSourceSpec) -> Discovery:
    """The GGUF files of the repository at its revision, read with the hub's own client."""
    from huggingface_hub import HfApi

    assert spec.huggingface is not None
    hub = spec.huggingface
    # No token: a source reads public repositories or a mirror that needs none, never a local login.
    info = HfApi(endpoint=hub.endpoint).model_info(
        hub.repository, revision=hub.revision, files_metadata=True, timeout=HUB_TIMEOUT_SECONDS, token=False
    )
    if not info.sha:
        raise DiscoveryError(f"{hub.endpoint}: no commit for {hub.repository}@{hub.revision}")
    return hub_files(spec, info.sha, info.siblings or [])


def hub_files(spec: ModelSourceSpec, commit: str, siblings: list[Any]) -> Discovery:
    """Releases of a repository's files at `commit` (`huggingface_hub.hf_api.RepoSibling`s)."""
    from huggingface_hub import hf_hub_url

    assert spec.huggingface is not None
    hub = spec.huggingface
    found = Discovery()
    for sibling in siblings:
        name = sibling.rfilename
        if not fnmatch.fnmatch(name, hub.pattern):
            continue
        try:
            filename = relative_parts(name)[-1]
            version, quantization = _file_release(spec, filename)
            sha256 = sibling.lfs.sha256 if sibling.lfs is not None else ""
            if not re.fullmatch(r"[0-9a-f]{64}", sha256):
                raise Refused("NoHash", "the hub records no sha256 for it (not stored with LFS)")
        except Refused as refusal:
            found.rejected.append(Rejection(name[:80], refusal.reason, str(refusal)))
            continue
        if version == spec.deployment:  # a name that says no more than the model's: the commit is the version
            version = f"rev-{commit[:12]}"
        uri = hf_hub_url(hub.repository, name, revision=commit, endpoint=hub.endpoint)
        found.releases.append(Release(version, uri, f"sha256:{sha256}", quantization, sibling.lfs.size))
    return found
