"""`baton export`: the champion leaves as Ollama and LM Studio take it, byte for byte and sampled alike.

The Modelfile is read by Ollama's own parser and its TEMPLATE executed by Ollama's own template
engine (tests/tools/ollama_modelfile); the prompt it renders must be the one llama.cpp renders from
the GGUF's chat template, or the exported model would answer differently on a laptop.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest
import yaml
from click.testing import CliRunner

from baton.api import ModelDeployment, ModelSource
from baton.cli import main
from baton.evidence.sources import SourcePoller
from baton.local.store import LocalStore
from baton_models import catalog
from baton_serving.artifacts import gguf_metadata
from tests.policies import opted_in
from tests.tools import ollama_modelfile
from tests.unit.evidence.stores import RecordingStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def champion():
    return catalog.smoke("medical", "Q8_0")


def state_with_champion(state_dir: Path, artifact) -> None:
    """A local state directory whose `medical` deployment has `artifact` as its recorded champion."""
    (document,) = [
        d
        for d in yaml.safe_load_all((REPO / "manifests/examples/medical.yaml").read_text())
        if d["kind"] == "ModelDeployment"
    ]
    recorded = {"uri": artifact.path.as_uri(), "digest": artifact.digest, "quantization": "Q8_0"}
    document["status"] = {
        "phase": "Promoted",
        "champion": {"revision": "medical-v2", "version": "v2", "artifact": recorded},
    }
    LocalStore(state_dir).write_object(ModelDeployment.model_validate(document))


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_ollama_export_is_parsed_by_ollama_and_renders_the_engines_prompt(tmp_path, champion):
    state_with_champion(tmp_path / "state", champion)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["export", "medical", "--out", str(out), "--state-dir", str(tmp_path / "state")]
    )
    assert result.exit_code == 0, result.output
    gguf = out / "medical-v2.Q8_0.gguf"
    assert sha256(gguf) == champion.digest

    messages = [
        {"role": "user", "content": "Route this triage note.\nPt 66yo"},
        {"role": "assistant", "content": "ward: cardiology"},
        {"role": "user", "content": "And this one?"},
    ]
    parsed = ollama_modelfile.parse(out / "Modelfile", messages)
    commands = [(c["Name"], c["Args"]) for c in parsed["commands"]]
    assert commands[0] == ("model", "./medical-v2.Q8_0.gguf")
    assert commands[1][0] == "template"
    # What baton's engine samples with when a request sets nothing, and the deployment's context.
    assert commands[2:] == [
        ("temperature", "1"),
        ("top_p", "1"),
        ("top_k", "40"),
        ("min_p", "0.05"),
        ("repeat_penalty", "1"),
        ("num_ctx", "256"),
    ]

    metadata = gguf_metadata(gguf)
    tokens = metadata["tokenizer.ggml.tokens"]
    expected = jinja2.Template(metadata["tokenizer.chat_template"]).render(
        messages=messages,
        bos_token=tokens[metadata["tokenizer.ggml.bos_token_id"]],
        eos_token=tokens[metadata["tokenizer.ggml.eos_token_id"]],
    )
    bos = tokens[metadata["tokenizer.ggml.bos_token_id"]]
    assert parsed["rendered"] == expected.removeprefix(bos), "Ollama adds BOS itself"


def test_lmstudio_export_is_what_the_lmstudio_source_reads(tmp_path, champion):
    state_with_champion(tmp_path / "state", champion)
    out = tmp_path / "lmstudio"
    args = [
        "export",
        "medical",
        "--format",
        "lmstudio",
        "--out",
        str(out),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    watched = ModelSource.model_validate(
        {
            "metadata": {"name": "laptop"},
            "spec": {"deployment": "medical", "lmstudio": {"path": str(out), "repository": "baton/medical"}},
        }
    )
    gguf = out / "baton/medical/medical-v2.Q8_0.gguf"
    old = datetime.now(UTC).timestamp() - 60
    os.utime(gguf, (old, old))
    store = RecordingStore(tmp_path / "poll", {"laptop": watched})
    SourcePoller(store, opted_in(tmp_path)).poll(watched, datetime.now(UTC))
    (offered,) = store.candidates()
    assert (offered.spec.version, offered.spec.artifact.digest) == ("v2", champion.digest)


def test_a_champion_whose_file_changed_is_not_exported(tmp_path, champion):
    tampered = tmp_path / "medical-v2.Q8_0.gguf"
    tampered.write_bytes(champion.path.read_bytes()[:-1] + b"\0")
    state_with_champion(tmp_path / "state", type(champion)(tampered, champion.digest, 0, "Q8_0", {}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["export", "medical", "--out", str(out), "--state-dir", str(tmp_path / "state")]
    )
    assert result.exit_code == 1 and "cannot export medical" in result.output
    assert not (out / "Modelfile").exists()


def test_export_reads_the_champion_from_the_api_server(tmp_path, champion, baton_crds):
    import kubernetes

    from baton.api import GROUP, VERSION

    namespace = "export"
    baton_crds.kubectl("create", "namespace", namespace)
    (document,) = [
        d
        for d in yaml.safe_load_all((REPO / "manifests/examples/medical.yaml").read_text())
        if d["kind"] == "ModelDeployment"
    ]
    document["spec"]["model"]["artifact"] = {
        "uri": "file:///nowhere/v1.gguf",
        "digest": "sha256:" + "0" * 64,
        "quantization": "Q8_0",
    }
    api = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(baton_crds.kubeconfig))
    )
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", document)
    recorded = {"uri": champion.path.as_uri(), "digest": champion.digest, "quantization": "Q8_0"}
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        "medical",
        {"status": {"champion": {"revision": "medical-v2", "version": "v2", "artifact": recorded}}},
    )
    out = tmp_path / "out"
    args = [
        "export",
        "medical",
        "--kubeconfig",
        str(baton_crds.kubeconfig),
        "--namespace",
        namespace,
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sha256(out / "medical-v2.Q8_0.gguf") == champion.digest, "the status's champion, not spec.model"
    assert (out / "Modelfile").read_text().splitlines()[1] == "FROM ./medical-v2.Q8_0.gguf"

    missing = CliRunner().invoke(main, [*args[:1], "surgery", *args[2:]])
    assert missing.exit_code == 1 and "no deployment 'surgery'" in missing.output
