"""From a list of chat messages to prompt token ids that fit the context.

The KV cache is reused through Session's common-prefix match on token ids, so a new turn of a growing
conversation only prefills what is new: the last reply (re-tokenized) and the new user message.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import EdgeLLMError
from .templates import ChatTemplate

# End-of-turn markers of common chat formats; those that are single tokens of a vocabulary stop generation
# like EOS does (a chatml model ends its turn with <|im_end|>, which is often not its EOS).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


def end_of_turn_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.eos_ids)
    for piece in END_OF_TURN:
        i = tokenizer.token_id(piece)
        if i is not None:
            ids.add(i)
    return ids


def encode_chat(template: ChatTemplate, tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the rendered conversation, with exactly one BOS when the model wants one."""
    text = template.render(messages, add_generation_prompt=True)
    bos = tokenizer.bos_token
    # templates that write bos_token themselves must not get a second one from the tokenizer
    return tokenizer.encode(text, add_bos=False if bos and text.startswith(bos) else None)


def fit_messages(messages: list[dict], count: Callable[[list[dict]], int], limit: int) -> tuple[list[dict], int]:
    """Drop the oldest turns (a user message with the replies after it), keeping a leading system message,
    until count(messages) <= limit. Returns (messages kept, number of messages dropped)."""
    head = messages[:1] if messages and messages[0].get("role") == "system" else []
    body = list(messages[len(head) :])
    dropped = 0
    while count(head + body) > limit:
        if len(body) <= 1:
            raise EdgeLLMError(
                f"the last message alone is {count(head + body)} tokens"
                f"{' with the system prompt' if head else ''}; "
                f"the context leaves room for {limit} (raise --context or shorten it)"
            )
        cut = 1
        while cut < len(body) - 1 and body[cut].get("role") != "user":
            cut += 1  # a turn = the user message and the replies that follow it
        body = body[cut:]
        dropped += cut
    return head + body, dropped
