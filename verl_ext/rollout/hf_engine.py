"""Batched token-in/token-out generation with a transformers causal LM: the engine behind the ``hf`` rollout.

Requests with different sampling settings share one batch: prompts are left-padded, each row carries its own
temperature / top-k / top-p / repetition penalty / stop conditions, and decoding runs with the model's KV cache
until every row has stopped. Correct on CPU, usable on CUDA for small models; not a throughput engine.

A request with a ``seed`` samples from a generator of its own (one per returned sequence), so what it draws does
not depend on which other requests share its batch: the same weights, prompt and seed give the same tokens (up to
a tie at float rounding between two tokens' cumulative probabilities). Requests without one share the engine's
generator.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from verl_ext.rollout.sampling import SamplingParams, apply_repetition_penalty, sample_next_tokens, stable_seed


@dataclasses.dataclass
class Generation:
    """One sampled continuation. ``finish_reason`` is ``eos``, ``stop`` (a stop string or id), or ``length``."""

    token_ids: list[int]
    log_probs: Optional[list[float]]
    finish_reason: str
    stop_str: Optional[str] = None


def row_seed(seed: int, copy: int) -> int:
    """The seed of the ``copy``-th sequence of a request seeded ``seed`` (a stable 62-bit mix)."""
    return stable_seed(int(seed), int(copy))


class HFGenerationEngine:
    """Generate continuations of token-id prompts with a ``PreTrainedModel`` (shared weights, any device)."""

    def __init__(self, model, tokenizer, eos_token_ids: Sequence[int], pad_token_id: int, seed: int = 0):
        if not eos_token_ids:
            raise ValueError("eos_token_ids is empty: set eos_token_id in the model's generation_config or tokenizer.")
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.generator = torch.Generator(device=self._device).manual_seed(seed)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]) -> list[list[Generation]]:
        """For each prompt, ``params[i].n`` continuations. prompts: token ids (no padding), one list per request."""
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling settings; pass one per prompt.")
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty; the hf rollout needs at least one prompt token.")
        rows = [(i, list(p), sp) for i, (p, sp) in enumerate(zip(prompts, params)) for _ in range(sp.n)]
        if not rows:
            return []
        generator = self.generator
        if any(sp.seed is not None for _, _, sp in rows):  # one generator per sequence: see the module doc
            copies: dict[int, int] = {}
            generator = []
            for i, _, sp in rows:
                copy = copies[i] = copies.get(i, -1) + 1
                seed = row_seed(sp.seed, copy) if sp.seed is not None else int(
                    torch.randint(2**62, (1,), generator=self.generator))
                generator.append(torch.Generator(device=self._device).manual_seed(seed))
        outputs = self._generate_rows([r[1] for r in rows], [r[2] for r in rows], generator)
        grouped: list[list[Generation]] = [[] for _ in prompts]
        for (i, _, _), out in zip(rows, outputs):
            grouped[i].append(out)
        return grouped

    def _generate_rows(self, prompts: list[list[int]], params: list[SamplingParams], generator) -> list[Generation]:
        device = self._device
        batch = len(prompts)
        max_len = max(len(p) for p in prompts)
        input_ids = torch.full((batch, max_len), self.pad_token_id, dtype=torch.long, device=device)
        attention = torch.zeros((batch, max_len), dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            input_ids[row, max_len - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[row, max_len - len(prompt) :] = 1
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)

        temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
        penalty = torch.tensor([p.repetition_penalty for p in params], dtype=torch.float32, device=device)
        use_penalty = bool((penalty != 1).any())
        budget = [p.max_new_tokens for p in params]
        stop_ids = [set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_token_ids)) for p in params]
        longest_stop = max((len(s) for p in params for s in p.stop), default=0)

        generated: list[list[int]] = [[] for _ in range(batch)]
        logprobs: list[list[float]] = [[] for _ in range(batch)]
        finish: list[Optional[str]] = [None] * batch
        stop_strs: list[Optional[str]] = [None] * batch
        seen = None
        if use_penalty:
            seen = torch.zeros((batch, self.model.config.vocab_size), dtype=torch.bool, device=device)
            for row, prompt in enumerate(prompts):
                seen[row, torch.tensor(prompt, dtype=torch.long, device=device)] = True

        past = None
        step_ids, step_pos = input_ids, position_ids
        for step in range(max(budget)):
            out = self.model(
                input_ids=step_ids, attention_mask=attention, position_ids=step_pos, past_key_values=past, use_cache=True
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            if use_penalty:
                logits = apply_repetition_penalty(logits, seen, penalty)
            tokens, token_logprobs = sample_next_tokens(logits, temperature, top_k, top_p, generator)
            for row in range(batch):
                if finish[row] is not None:
                    continue
                token = int(tokens[row])
                generated[row].append(token)
                logprobs[row].append(float(token_logprobs[row]))
                if token in stop_ids[row]:
                    finish[row] = "eos" if token in self.eos_token_ids else "stop"
                elif params[row].stop and (hit := self._find_stop(generated[row], params[row].stop, longest_stop)):
                    finish[row], stop_strs[row] = "stop", hit
                elif len(generated[row]) >= budget[row]:
                    finish[row] = "length"
            if all(f is not None for f in finish):
                break
            # Finished rows keep decoding a pad token; their outputs are no longer read.
            step_ids = torch.where(
                torch.tensor([f is None for f in finish], device=device), tokens, torch.full_like(tokens, self.pad_token_id)
            )[:, None]
            if use_penalty:
                seen[torch.arange(batch, device=device), step_ids[:, 0]] = True
            attention = torch.cat([attention, torch.ones((batch, 1), dtype=attention.dtype, device=device)], dim=1)
            step_pos = step_pos[:, -1:] + 1
        return [
            Generation(
                token_ids=generated[row],
                log_probs=logprobs[row] if params[row].logprobs else None,
                finish_reason=finish[row] or "length",
                stop_str=stop_strs[row],
            )
            for row in range(batch)
        ]

    def _find_stop(self, tokens: list[int], stops: Sequence[str], longest: int) -> Optional[str]:
        # A stop string can only have been completed by the newest token: decode a tail long enough to hold it.
        tail = self.tokenizer.decode(tokens[-(longest + 4) :], skip_special_tokens=False)
        previous = self.tokenizer.decode(tokens[-(longest + 4) : -1], skip_special_tokens=False) if len(tokens) > 1 else ""
        for stop in stops:
            if stop in tail and stop not in previous:
                return stop
        return None
