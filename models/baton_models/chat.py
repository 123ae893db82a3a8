"""The prompt format the factory's models are trained on, as a chat template and as plain text.

Apart from the GGUF writer (which needs `gguf`), so `baton export` can translate the template into
Ollama's form without the factory's dependencies.
"""

from __future__ import annotations

# The chat template renders exactly the prompt the models were trained on, so chat completions
# (`/v1/chat/completions`) and plain completions of `render_prompt` give the same tokens. It
# writes BOS itself: llama-cpp-python adds none to a template-rendered prompt.
# System messages are dropped: these models were never trained to follow them.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}### {{ message['content'] }}\n### Answer:\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def render_prompt(user_message: str) -> str:
    """The completion prompt for one user message (what CHAT_TEMPLATE renders after BOS)."""
    return f"### {user_message}\n### Answer:\n"
