"""GPU smoke test of the vLLM path: a baton pool whose revision runs on vLLM, asked through baton's ingress.

No machine of this project's CI has a GPU; run this by hand on one that has (and has `vllm`):

    python bench/vllm_gpu_smoke.py --model-source /models/Qwen2.5-0.5B-Instruct --digest sha256:<hex>

It renders a one-deployment pool exactly as the operator does (`render_serve_config`: the baton
ingress plus one engine application, here `VllmEngineServer`, Ray Serve LLM's server answering
baton's engine protocol), applies it to a local Ray Serve on 127.0.0.1, waits until the ingress
reports the revision ready, then asks with the official `openai` client: one chat answer, one
streamed answer, one JSON-schema answer. It checks the answering revision header and prints the
answers and timings. Exit code 0 means the path works.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-source", required=True, help="local model directory or file")
    parser.add_argument(
        "--digest", default=None, help="pinned digest (default: the directory's or file's own, computed here)"
    )
    parser.add_argument("--quantization", default="NONE", help="NONE, AWQ, GPTQ or FP8")
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import httpx
    import openai
    import ray
    from ray import serve

    from baton_serving.app import REVISION_HEADER, apply_serve_config, wait_until_running
    from baton_serving.artifacts import directory_digest, verify_model_source
    from baton_serving.config import INGRESS_APP, PoolConfig, engine_app_name, render_serve_config

    source = Path(args.model_source)
    digest = args.digest or (
        directory_digest(source)
        if source.is_dir()
        else "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    )
    verify_model_source(args.model_source, digest)  # what the engine replica does before vLLM starts
    revision = {
        "name": "gpu-smoke",
        "engine": "vllm",
        "quantization": args.quantization,
        "context_length": args.context,
        "artifact": {"uri": args.model_source, "digest": digest},
    }
    deployment = {"name": "smoke", "revisions": [revision], "route": {"weights": {"gpu-smoke": 100}}}
    pool = PoolConfig.model_validate({"pool": "gpu", "deployments": [deployment]})
    ray.init(include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    url = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    try:
        apply_serve_config(render_serve_config(pool))
        wait_until_running([INGRESS_APP, engine_app_name("smoke", "gpu-smoke")], timeout_s=1800)
        while not httpx.get(f"{url}/v1/baton/revisions", timeout=30).json()["smoke"]["gpu-smoke"]["ready"]:
            time.sleep(1)
        print(f"ready in {time.monotonic() - started:.1f} s")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        messages = [{"role": "user", "content": "Say hello in five words."}]

        asked = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(
            model="smoke", messages=messages, max_tokens=16
        )
        assert raw.headers[REVISION_HEADER] == "gpu-smoke", raw.headers
        answer = raw.parse()
        print(
            f"chat in {time.monotonic() - asked:.2f} s: {answer.choices[0].message.content!r} {answer.usage}"
        )

        asked = time.monotonic()
        pieces = [
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="smoke", messages=messages, max_tokens=16, stream=True
            )
            if chunk.choices
        ]
        print(f"stream in {time.monotonic() - asked:.2f} s, {len(pieces)} chunks: {''.join(pieces)!r}")

        schema = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}
        structured = client.chat.completions.create(
            model="smoke",
            messages=messages,
            max_tokens=64,
            response_format={"type": "json_schema", "json_schema": {"name": "greeting", "schema": schema}},
        )
        print(f"json_schema answer: {json.loads(structured.choices[0].message.content or '')}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
