"""The one routed attention call of an Elastic Attention layer, whatever feeds it: the HF model's padded batches
and packed rows (``hf.py``; the verl actor's micro-batches and router-training packs among them) and vLLM's routed
prompts (``vllm_models.py``).

``routed_attention(attn, q, k, v, layout)``, for a layer carrying ``attn.elastic`` (``state.ElasticLayerState``,
its pre-RoPE keys already captured into ``state.keys``) and ``attn.elastic_router``:

1. **router input**: each sequence's keys pooled over its prompt (``pooled_keys``; ``Layout`` says where the
   sequences and their prompts lie);
2. **decision** per (sequence, KV head), 1 = the retrieval mode: fixed decisions (``config.force`` or a static head
   mask) when set, else the router's argmax at inference and its Gumbel-softmax straight-through sample in training
   (``state.tau`` set and the module in training mode), deterministic with ``state.noise`` off (``decide``);
3. **recorded** in the layer state: ``decisions`` (hard), ``soft_decisions`` (training, with gradient),
   ``block_mask`` (inference, when a head's mode reads one);
4. **attention** through the one mode-table builder (``mode_table.attend`` on the decided table, with the response
   rows of the heads that decode densely made dense when prompts are known; ``mode_table.attend_train`` mixing both
   modes by the straight-through decision).

Shapes: S sequences, Hq query heads, H_kv KV heads, D head_dim; q (B, T, Hq, D) padded or (N, Hq, D) packed, k and v
likewise with H_kv heads.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from verl_ext.elastic_attention import mode_table
from verl_ext.elastic_attention.router import boundary_pool, expand_to_query_heads, route_inference, route_train
from verl_ext.elastic_attention.state import ElasticLayerState
from verl_ext.kernels.elastic_attention.utils import packed, sequences


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the sequences of a forward lie: packed (N, H, D) rows with ``cu_seqlens`` (S + 1,), or padded
    (B, T, H, D) rows with ``lengths`` (B,) valid tokens each (None: all T), ``left_padded`` or right-padded.
    ``prompt_lengths`` (S,): the tokens of each sequence the router pools over, the rest being its response (None:
    the whole sequence is prompt); values are clamped to [1, sequence length]."""

    cu_seqlens: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    left_padded: bool = False
    prompt_lengths: Optional[torch.Tensor] = None

    def kernel_layout(self) -> dict:
        """The layout arguments of ``mode_table`` and the kernels."""
        return dict(cu_seqlens=self.cu_seqlens, lengths=self.lengths, left_padded=self.left_padded)

    def sequences(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, lens) int64 (S,) of the sequences in the packed (N, ...) view of ``x`` (laid out as q)."""
        starts, lens = sequences(x, **self.kernel_layout())
        return starts.to(torch.int64), lens.to(torch.int64)

    def prompts(self, lens: torch.Tensor) -> torch.Tensor:
        """(S,) int64 prompt tokens of each sequence of lengths ``lens``."""
        if self.prompt_lengths is None:
            return lens
        given = self.prompt_lengths.to(torch.int64).cpu()
        if given.shape != lens.shape:
            raise ValueError(f"elastic prompt lengths hold {given.numel()} values for a packed row of {lens.numel()} "
                             "sequences; set one per sequence (set_prompt_lengths) or None.")
        return torch.minimum(given.clamp(min=1), lens)


def _keys(state: ElasticLayerState, layout: Layout) -> torch.Tensor:
    """The captured pre-RoPE keys laid out as the layout's q: (B, T, H_kv, D) padded, (N, H_kv, D) packed."""
    if state.keys is None:
        raise RuntimeError("elastic attention: no keys were captured for this forward (the key hook did not run).")
    return state.keys.reshape(-1, *state.keys.shape[-2:]) if layout.cu_seqlens is not None else state.keys


def pooled_keys(state: ElasticLayerState, layout: Layout) -> torch.Tensor:
    """(S, H_kv, D) float32: each sequence's captured keys pooled over its prompt (``router.boundary_pool`` with the
    config's budget and pooling mode). Padded rows keep their width T; packed ones are gathered to the longest
    prompt (positions past a prompt repeat its last token and weigh nothing)."""
    keys = _keys(state, layout)
    starts, lens = layout.sequences(keys)
    prompt = layout.prompts(lens)
    width = keys.shape[1] if layout.cu_seqlens is None else int(prompt.max())
    offsets = torch.minimum(torch.arange(width)[None, :], (prompt - 1)[:, None])  # (S, width)
    rows = packed(keys)[(starts[:, None] + offsets).to(keys.device)]  # (S, width, H_kv, D)
    return boundary_pool(rows, prompt.to(keys.device), state.config.pool_budget, state.config.pool_mode)


def router_logits(attn, layout: Layout) -> torch.Tensor:
    """(S, H_kv, 2) router logits (index 1 = retrieval) of the sequences of ``layout``, from the keys captured in
    ``attn.elastic``."""
    router = attn.elastic_router
    return router(pooled_keys(attn.elastic, layout).to(next(router.parameters()).dtype))


def decide(attn, layout: Layout, training: bool) -> torch.Tensor:
    """(S, H_kv) decisions, 1 = retrieval: long 0/1 at inference (fixed decisions first, else the argmax), float
    with the straight-through gradient in training (Gumbel-softmax at ``state.tau``; no noise with
    ``state.noise`` off)."""
    state: ElasticLayerState = attn.elastic
    if not training:
        keys = _keys(state, layout)
        fixed = state.fixed_decisions(len(layout.sequences(keys)[0]), keys.shape[-2], keys.device)
        if fixed is not None:
            return fixed
        return route_inference(router_logits(attn, layout))
    return route_train(router_logits(attn, layout), state.tau, generator=state.generator, noise=state.noise)


def dense_from(state: ElasticLayerState, layout: Layout, q: torch.Tensor) -> Optional[torch.Tensor]:
    """(S,) the prompt length of each sequence, from which the heads that decode densely
    (``mode_table.dense_decode_codes``) attend densely, as the decode steps that produced those tokens did; None
    when the prompts are not given, no sequence has a response, or no mode of the pair decodes densely."""
    if layout.prompt_lengths is None or not mode_table.pair_decodes_densely(state.config):
        return None
    lens = layout.sequences(q)[1]
    prompt = layout.prompts(lens)
    return prompt if bool((prompt < lens).any()) else None


def routed_attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Layout,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Route every sequence of ``layout`` on its prompt, record the decisions in ``attn.elastic`` and attend with
    every head in its mode; O shaped like q (see the module doc)."""
    state: ElasticLayerState = attn.elastic
    config = state.config
    groups = q.shape[-2] // k.shape[-2]
    training = attn.training and state.training
    z = decide(attn, layout, training)
    if training:
        state.soft_decisions = z
        state.decisions = (z.detach() > 0.5).long()
        return mode_table.attend_train(config, q, k, v, expand_to_query_heads(z, groups), scale=scale,
                                       **layout.kernel_layout())
    state.decisions = z
    retrieval = expand_to_query_heads(z, groups)
    state.block_mask = (mode_table.block_masks(config, q, k, **layout.kernel_layout())
                        if mode_table.needs_block_masks(config, retrieval) else None)
    return mode_table.attend(config, q, k, v, retrieval, dense_from=dense_from(state, layout, q), scale=scale,
                             block_mask=state.block_mask, **layout.kernel_layout())
