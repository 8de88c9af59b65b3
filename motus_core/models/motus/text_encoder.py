"""umT5 instruction embeddings for Motus: encoder API, offline tiny encoder, on-disk cache.

Facts followed (official Wan ``T5EncoderModel`` as Motus calls it, motus-spec §2.6): the text is
cleaned (``ftfy`` + twice ``html.unescape`` + whitespace collapsed, Wan's ``clean='whitespace'``),
tokenised with the umT5 tokenizer padded/truncated to 512 with special tokens (``</s>`` closes the
text), encoded by the umT5-XXL encoder, and each output is **trimmed to its true token count**
(``[L_i, 4096]``). ``ftfy`` is optional here: without it only the html/whitespace cleaning runs.

Encoders:
* :func:`load_text_encoder` - a converted directory (``motus-convert-checkpoint --umt5 ...``):
  ``config.json`` (transformers ``UMT5Config``), ``model.safetensors`` (transformers names),
  ``text_encoder.json`` (identity, text length, tokenizer kind) and the umT5 tokenizer files.
* :func:`build_tiny_text_encoder` - a tiny random ``UMT5EncoderModel`` with a byte-level tokenizer
  (UTF-8 byte ``b`` -> id ``b + 3``; 0 = pad, 1 = ``</s>``, 2 = unk), built offline in milliseconds.

:class:`TextEncoder` satisfies the data layer's ``motus_core.data.text.TextEncoder`` protocol; the
on-disk :class:`~motus_core.data.text.EmbeddingCache` lives there too (re-exported here).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Sequence

import torch

from motus_core.data.text import EmbeddingCache  # noqa: F401  (the cache lives with the data layer; re-exported)

TEXT_ENCODER_FILE = "text_encoder.json"


def clean_text(text: str) -> str:
    """Wan's ``clean='whitespace'``: fix mojibake (ftfy, when installed), unescape html twice, collapse whitespace."""
    try:
        import ftfy  # type: ignore

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class ByteTokenizer:
    """Byte-level tokenizer for tiny encoders: UTF-8 bytes + 3, ``</s>`` (1) appended, pad 0."""

    pad_id, eos_id, unk_id, offset = 0, 1, 2, 3
    vocab_size = 256 + 3

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for i, t in enumerate(texts):
            seq = [b + self.offset for b in t.encode("utf-8")][: max_length - 1] + [self.eos_id]
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        return ids, mask


class HFTokenizer:
    """The umT5 tokenizer from a local directory (transformers ``AutoTokenizer``, offline)."""

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(list(texts), padding="max_length", truncation=True, max_length=max_length,
                       add_special_tokens=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]


class TextEncoder:
    """umT5 encoder + tokenizer: ``encode(texts) -> [L_i, dim]`` tensors (float32, CPU), trimmed."""

    def __init__(self, model, tokenizer, *, identity: str, text_len: int = 512, batch_size: int = 8):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.identity = identity
        self.text_len = int(text_len)
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        out: list[torch.Tensor] = []
        cleaned = [clean_text(t) for t in texts]
        for s in range(0, len(cleaned), self.batch_size):
            ids, mask = self.tokenizer(cleaned[s : s + self.batch_size], self.text_len)
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            for h, n in zip(hidden, mask.sum(dim=1).tolist()):
                out.append(h[: int(n)].float().cpu().clone())
        return out


def build_tiny_text_encoder(seed: int = 0, dim: int = 32, layers: int = 2, text_len: int = 512) -> TextEncoder:
    """A tiny random umT5 with the byte tokenizer (tests, demos; no files needed)."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=ByteTokenizer.vocab_size, d_model=dim, d_kv=dim // 4, d_ff=2 * dim, num_layers=layers,
                     num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(cfg)
    return TextEncoder(model, ByteTokenizer(), identity=f"tiny-umt5-bytes/seed{seed}/dim{dim}/layers{layers}",
                       text_len=text_len)


def load_text_encoder(path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> TextEncoder:
    """A converted umT5 directory -> TextEncoder (strict loading, offline)."""
    from safetensors.torch import load_file
    from transformers import UMT5Config, UMT5EncoderModel

    from .convert import CheckpointError, load_strict

    p = Path(path).expanduser()
    meta_file = p / TEXT_ENCODER_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{p} is not a converted umT5 directory (no {TEXT_ENCODER_FILE})")
    meta = json.loads(meta_file.read_text())
    cfg = UMT5Config.from_pretrained(str(p), local_files_only=True)
    with torch.device("meta"):
        model = UMT5EncoderModel(cfg)
    sd = load_file(str(p / "model.safetensors"))
    if "encoder.embed_tokens.weight" not in sd and "shared.weight" in sd:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]  # tied (stored once)
    load_strict(model, sd, f"umT5 weights in {p}")
    model.to(device=device, dtype=dtype or torch.float32)
    tokenizer = ByteTokenizer() if meta.get("tokenizer") == "bytes" else HFTokenizer(p)
    return TextEncoder(model, tokenizer, identity=meta["identity"], text_len=int(meta.get("text_len", 512)))


def save_text_encoder(encoder: TextEncoder, path: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write ``encoder`` as a converted directory (the format ``load_text_encoder`` reads)."""
    import shutil

    from safetensors.torch import save_file

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    encoder.model.config.save_pretrained(str(p))
    sd = {k: v.contiguous() for k, v in encoder.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, str(p / "model.safetensors"))
    kind = "bytes" if isinstance(encoder.tokenizer, ByteTokenizer) else "hf"
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and f.name not in ("config.json", "model.safetensors", TEXT_ENCODER_FILE):
                shutil.copy2(f, p / f.name)
    elif kind == "hf":
        encoder.tokenizer.tok.save_pretrained(str(p))
    (p / TEXT_ENCODER_FILE).write_text(json.dumps(
        {"identity": encoder.identity, "text_len": encoder.text_len, "tokenizer": kind}, indent=2))
    return p
