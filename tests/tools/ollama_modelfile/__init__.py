"""Ollama's own Modelfile parser and template engine, built from its Go module, for export tests.

`ollama create` needs the whole server (and its llama.cpp build); what an export must get right is
what the server reads first: the Modelfile as `parser.ParseFile` takes it and the TEMPLATE as
`template.Parse` executes it. The binary is built once into `$BATON_CACHE/bin`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.testbed.binaries import bin_dir

HERE = Path(__file__).resolve().parent


def ollama_version() -> str:
    for line in (HERE / "go.mod").read_text().splitlines():
        if line.strip().startswith("github.com/ollama/ollama "):
            return line.split()[1]
    raise RuntimeError("go.mod pins no github.com/ollama/ollama")


def binary() -> Path:
    """The built tool, building it on first use (about two minutes cold on two cores)."""
    path = bin_dir() / f"ollama-modelfile-{ollama_version()}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"GOFLAGS": "-buildvcs=false -trimpath -mod=readonly", "CGO_ENABLED": "0"}
        subprocess.run(["go", "build", "-o", str(path), "."], cwd=HERE, env=env, check=True, timeout=900)
    return path


def parse(modelfile: Path, messages: list[dict[str, str]]) -> dict[str, Any]:
    """{"commands": [{"Name", "Args"}...], "rendered": TEMPLATE executed on `messages`}; raises if refused."""
    result = subprocess.run(
        [str(binary()), str(modelfile), json.dumps(messages)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise ValueError(f"ollama refused the Modelfile: {result.stderr.strip()}")
    return json.loads(result.stdout)
