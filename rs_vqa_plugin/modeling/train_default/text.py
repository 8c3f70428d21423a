"""Token ids of the prompt around the image and of the answer, exactly as the engine builds them.

Mirrors engine.llm.LanguageModel.prompt_segments (same template, system prompt, whitespace
normalisation as Engine.ask) without loading a model, so training sees the inference prompt."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ...engine.prompt import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPTS, IMAGE_PLACEHOLDER, prompt_ids


class PromptText:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.template = CHATML_TEMPLATE
        self.system_prompt = DEFAULT_SYSTEM_PROMPTS["qwen2"]
        self.end_id = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self.image_id = int(tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
        self.pad_id = int(tokenizer.pad_token_id)
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        # The converter takes image_newline and the separator from the "\n" token embedding.
        self.newline_id = int(newline[-1])

    def ids(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def segments(self, question: str) -> Tuple[List[int], List[int]]:
        return prompt_ids(self.tokenizer, self.template, question, (), self.system_prompt)

    def answer(self, text: str) -> List[int]:
        return self.ids(str(text).strip()) + [self.end_id]

    def kind_first_tokens(self, vocab_size: int) -> np.ndarray:
        """bool [len(answer_kinds.KINDS), vocab_size]: the first token of every answer of each
        kind (the answer-kind loss keeps the first answer token's mass among them)."""
        from ...benchmark.answer_kinds import KINDS, answer_words

        table = np.zeros((len(KINDS), vocab_size), dtype=bool)
        for k, kind in enumerate(KINDS):
            for word in answer_words(kind):
                table[k, self.answer(word)[0]] = True
        return table
