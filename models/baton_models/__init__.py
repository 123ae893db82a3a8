"""baton's model factory: tiny, reproducible domain language models and their benchmarks.

No machine here can download weights, so the project trains its own: one small llama per
domain (medical, construction, aerospace, software) in versions of known relative quality,
exported to GGUF and quantized by llama.cpp. `baton_models.catalog.ensure` builds or reuses
an artifact; `python -m baton_models build` does the same from the shell.
"""
