"""Build a tiny random-weight causal LM with a locally trained tokenizer, loadable by ``AutoModelForCausalLM``.

    python -m verl_ext.testing.tiny_model OUT_DIR --arch qwen2 [--hidden 64 --layers 2 --heads 4 --kv-heads 2]

The tokenizer is a byte-level BPE trained here (no hub) on the built-in arithmetic task and a few phrases the
recipes use, so any text encodes; it has a ChatML chat template, ``<|im_end|>`` as EOS and ``<pad>`` as padding.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from verl_ext.testing import arithmetic

ARCHS = ("qwen2", "qwen3", "llama")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<pad>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Phrases recipes emit or parse, so they tokenize compactly.
EXTRA_CORPUS = [
    "It's better to redo the question.",
    "Solve the following math problem step by step. If you obtain a final answer, enclose it in \\boxed{}.",
    "[[A]] [[B]] Agent A Agent B The better response is",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) { } [ ] . , ; : ? !",
]


@dataclass(frozen=True)
class TinyModelSpec:
    arch: str = "qwen2"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 512
    max_positions: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch={self.arch!r} is not supported; choose one of {ARCHS}.")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}.")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads} (GQA groups).")


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """A byte-level BPE trained on ``corpus`` (default: the arithmetic task) and the recipes' phrases."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((arithmetic.corpus() if corpus is None else corpus) + EXTRA_CORPUS, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def _config(spec: TinyModelSpec, vocab_size: int, eos_id: int, pad_id: int):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    if spec.arch == "qwen2":
        return Qwen2Config(**common)
    if spec.arch == "qwen3":
        return Qwen3Config(head_dim=spec.hidden // spec.heads, **common)
    return LlamaConfig(**common)


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec(), corpus: list[str] | None = None) -> Path:
    """Write config, random weights, tokenizer (trained on ``corpus``, default the arithmetic task) and generation
    config to ``out_dir``; returns the folder."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab, corpus)
    # Round the embedding up so no sampled id falls outside the tokenizer's vocabulary by more than padding.
    vocab_size = ((len(tokenizer) + 63) // 64) * 64
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = _config(spec, vocab_size, eos_id, pad_id)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "verl_ext_tiny_model.json").write_text(json.dumps(spec.__dict__, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2")
    parser.add_argument("--hidden", type=int, default=TinyModelSpec.hidden)
    parser.add_argument("--layers", type=int, default=TinyModelSpec.layers)
    parser.add_argument("--heads", type=int, default=TinyModelSpec.heads)
    parser.add_argument("--kv-heads", type=int, default=TinyModelSpec.kv_heads)
    parser.add_argument("--intermediate", type=int, default=TinyModelSpec.intermediate)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-start-steps", type=int, default=0, help="supervised warm start on arithmetic (steps)")
    args = parser.parse_args(argv)
    spec = TinyModelSpec(
        arch=args.arch,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads,
        intermediate=args.intermediate,
        seed=args.seed,
    )
    out = build_tiny_model(args.out_dir, spec)
    if args.warm_start_steps > 0:
        from verl_ext.testing.warm_start import warm_start

        report = warm_start(out, steps=args.warm_start_steps, seed=args.seed)
        print(json.dumps(report))
    print(out)


if __name__ == "__main__":
    main()
