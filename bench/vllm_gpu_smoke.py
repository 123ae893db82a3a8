"""GPU smoke test of the vLLM path: a baton revision rendered as `LLMConfig`, served by Ray Serve LLM.

No machine of this project's CI has a GPU; run this by hand on one that has (and has `vllm`):

    python bench/vllm_gpu_smoke.py --model-source /models/Qwen2.5-0.5B-Instruct --digest sha256:<hex>

It renders the revision exactly as a GPU pool would (`baton_serving.engines.vllm.render_llm_config`),
starts Ray Serve LLM's OpenAI application on 127.0.0.1, asks one chat question with the official
`openai` client and prints the answer and the time it took. Exit code 0 means the path works.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-source", required=True, help="local model directory or hub-mirror id")
    parser.add_argument(
        "--digest", default="sha256:" + "0" * 64, help="pinned digest (recorded, not checked)"
    )
    parser.add_argument("--quantization", default="NONE", help="NONE, AWQ, GPTQ or FP8")
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import openai
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    from baton_serving.config import RevisionSpec
    from baton_serving.engines.vllm import render_llm_config

    revision = RevisionSpec.model_validate(
        {
            "name": "gpu-smoke",
            "engine": "vllm",
            "quantization": args.quantization,
            "context_length": args.context,
            "artifact": {"uri": args.model_source, "digest": args.digest},
        }
    )
    llm_config = LLMConfig(**render_llm_config("smoke", revision))
    ray.init(include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    started = time.monotonic()
    serve.run(build_openai_app({"llm_configs": [llm_config]}), blocking=False)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="unused")
    answer = client.chat.completions.create(
        model="smoke", messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=16
    )
    print(f"ready and answered in {time.monotonic() - started:.1f} s: {answer.choices[0].message.content!r}")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
