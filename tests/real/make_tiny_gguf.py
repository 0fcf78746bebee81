#!/usr/bin/env python3
"""Generate a tiny, fully deterministic GGUF model for usepod-edge's real-backend tests.

Requirements: `pip install gguf==0.19.0 numpy` (no model download, no network).

How it works
------------
The model is a one-layer "llama" architecture network whose weights are chosen by
hand rather than trained:

* token embeddings are one-hot (the embedding width is the vocabulary size rounded
  up to a multiple of 32), so each token owns one dimension of the residual stream;
* every projection that writes back into the residual stream (attention output,
  FFN down) is zero, so the hidden state of the last position after the single
  block is still the one-hot vector of the last token (RMS norm only rescales it);
* `output.weight` is a successor table: row `next(t)` has a large value in column
  `t`, so the logits strongly favour exactly one next token for each input token.

The successor table walks the words of REPLY and then emits `<|im_end|>`, the
end-of-generation token, so every chat request gets the same answer,
" Hello from the tiny test model.", whatever the prompt. With `--loop` the last
word leads back to the first and the model never stops by itself (use
`max_tokens`); that is what streaming, throughput and cancellation tests want.

The logit gap is about 4 * sqrt(n_embd) (~70), so even a high sampling
temperature practically never leaves the path.

Usage: make_tiny_gguf.py OUT.gguf [--loop]
"""

from __future__ import annotations

import argparse

import gguf
import numpy as np

# SentencePiece-style pieces ("\u2581" marks a leading space).
REPLY = ["\u2581Hello", "\u2581from", "\u2581the", "\u2581tiny", "\u2581test", "\u2581model", "."]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

N_LAYER = 1
N_HEAD = 4
N_FF = 32
N_CTX_TRAIN = 4096
LOGIT = 4.0


class Vocab:
    """Token list with scores and types, in id order."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.scores: list[float] = []
        self.types: list[int] = []

    def add(self, piece: str, ttype: gguf.TokenType, score: float = 0.0) -> int:
        self.pieces.append(piece.encode("utf-8"))
        self.scores.append(score)
        self.types.append(int(ttype))
        return len(self.pieces) - 1

    def __len__(self) -> int:
        return len(self.pieces)


def build_vocab() -> tuple[Vocab, dict[str, int], list[int]]:
    v = Vocab()
    special = {
        "unk": v.add("<unk>", gguf.TokenType.UNKNOWN),
        "bos": v.add("<s>", gguf.TokenType.CONTROL),
        "eos": v.add("</s>", gguf.TokenType.CONTROL),
        "im_start": v.add("<|im_start|>", gguf.TokenType.CONTROL),
        "im_end": v.add("<|im_end|>", gguf.TokenType.CONTROL),
    }
    # Byte fallback: any text tokenizes, whatever its characters.
    for byte in range(256):
        v.add(f"<0x{byte:02X}>", gguf.TokenType.BYTE)
    # A space piece and lowercase letters, so ordinary prompts are not all bytes.
    v.add("\u2581", gguf.TokenType.NORMAL, -1.0)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        v.add(letter, gguf.TokenType.NORMAL, -2.0)
    reply_ids = [v.add(word, gguf.TokenType.NORMAL, -3.0) for word in REPLY]
    return v, special, reply_ids


def successor_table(n_vocab: int, reply_ids: list[int], stop_id: int, loop: bool) -> list[int]:
    """next[t] for every token t: anything not in the reply starts the reply."""
    nxt = [reply_ids[0]] * n_vocab
    for cur, follow in zip(reply_ids, reply_ids[1:]):
        nxt[cur] = follow
    nxt[reply_ids[-1]] = reply_ids[0] if loop else stop_id
    return nxt


def write_model(path: str, loop: bool) -> None:
    vocab, special, reply_ids = build_vocab()
    n_vocab = len(vocab)
    n_embd = (n_vocab + 31) // 32 * 32  # one-hot needs n_embd >= n_vocab
    f32 = np.float32

    token_embd = np.zeros((n_vocab, n_embd), dtype=f32)
    token_embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0

    # logits = output @ hidden; hidden is one-hot of the current token.
    output = np.zeros((n_vocab, n_embd), dtype=f32)
    for cur, follow in enumerate(successor_table(n_vocab, reply_ids, special["im_end"], loop)):
        output[follow, cur] = LOGIT

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("usepod-edge-tiny-loop" if loop else "usepod-edge-tiny")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(n_embd // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("llama")
    w.add_token_list(vocab.pieces)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_bos_token_id(special["bos"])
    w.add_eos_token_id(special["im_end"])
    w.add_unk_token_id(special["unk"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    ones = np.ones(n_embd, dtype=f32)
    w.add_tensor("token_embd.weight", token_embd)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", output)
    for layer in range(N_LAYER):
        blk = f"blk.{layer}."
        w.add_tensor(blk + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(blk + name + ".weight", np.zeros((n_embd, n_embd), dtype=f32))
        w.add_tensor(blk + "ffn_norm.weight", ones)
        w.add_tensor(blk + "ffn_gate.weight", np.zeros((N_FF, n_embd), dtype=f32))
        w.add_tensor(blk + "ffn_up.weight", np.zeros((N_FF, n_embd), dtype=f32))
        w.add_tensor(blk + "ffn_down.weight", np.zeros((n_embd, N_FF), dtype=f32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} (n_vocab={n_vocab}, n_embd={n_embd}, loop={loop})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", help="path of the .gguf file to write")
    parser.add_argument("--loop", action="store_true", help="repeat the reply forever (no EOG)")
    args = parser.parse_args()
    write_model(args.out, args.loop)


if __name__ == "__main__":
    main()
