"""Qwen3-VL understanding features for Motus (transformers ``Qwen3VLModel``, frozen).

Facts followed (motus-spec §2.5): the understanding stream starts from the VLM text model's final
hidden state **after its final RMSNorm** over every prompt position (text, special and image tokens),
i.e. ``Qwen3VLModel.forward(...).last_hidden_state``. The inference prompt is one user turn with
content ``[text, image]``, no generation prompt, given to the processor with the model-size
(384x320) image. The VLM is deterministic, so a policy runs it once per chunk, not per step.

Input builders:
* :class:`ProcessorPrompt` - the real Qwen3-VL processor from a local directory (chat template);
* :class:`TinyPrompt` - for tiny random VLMs: transformers' Qwen2-VL image processor (the one the
  Qwen3-VL processor uses: patch 16, merge 2, temporal patch 2, mean/std 0.5) built in code, and the
  byte tokenizer of ``text_encoder.py`` folded into the tiny vocabulary; layout
  ``<vision_start> <image>*n <vision_end> text``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _image_processor(patch: int, merge: int, temporal: int, hw: tuple[int, int]):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    n = hw[0] * hw[1]
    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=merge, temporal_patch_size=temporal,
                                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
                                    size={"shortest_edge": min(n, 56 * 56), "longest_edge": max(n, 56 * 56)})


class TinyPrompt:
    """VLM inputs without tokenizer files (tiny configs)."""

    def __init__(self, vlm_config: dict, image_hw: tuple[int, int]):
        v = vlm_config["vision_config"]
        self.image_token = int(vlm_config["image_token_id"])
        self.start = int(vlm_config["vision_start_token_id"])
        self.end = int(vlm_config["vision_end_token_id"])
        self.text_vocab = min(self.image_token, self.start, self.end, int(vlm_config.get("video_token_id", 10**9)))
        self.merge = int(v["spatial_merge_size"])
        self.processor = _image_processor(int(v["patch_size"]), self.merge, int(v["temporal_patch_size"]), image_hw)

    def __call__(self, image: np.ndarray, text: str) -> dict:
        from PIL import Image

        img = self.processor(images=[Image.fromarray(image)], return_tensors="pt")
        n_img = int(img["image_grid_thw"][0].prod()) // (self.merge**2)
        text_ids = [3 + b % (self.text_vocab - 3) for b in text.encode("utf-8")] or [1]
        ids = [self.start] + [self.image_token] * n_img + [self.end] + text_ids
        input_ids = torch.tensor([ids])
        return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                    mm_token_type_ids=(input_ids == self.image_token).long(),
                    pixel_values=img["pixel_values"], image_grid_thw=img["image_grid_thw"])


class ProcessorPrompt:
    """The Qwen3-VL processor (tokenizer + image processor + chat template) from a local directory."""

    def __init__(self, path: str | Path):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)

    def __call__(self, image: np.ndarray, text: str) -> dict:
        from PIL import Image

        messages = [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image"}]}]
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        enc = self.processor(text=[prompt], images=[Image.fromarray(image)], return_tensors="pt")
        keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        out = {k: enc[k] for k in keys if k in enc}
        if "mm_token_type_ids" not in out:
            image_id = self.processor.image_token_id
            out["mm_token_type_ids"] = (out["input_ids"] == image_id).long()
        return out


class VLMFeatures:
    """Frozen Qwen3-VL: (model-size image, instruction) -> last hidden state ``[1, L_u, hidden]``."""

    def __init__(self, model, prompt):
        self.model = model.eval().requires_grad_(False)
        self.prompt = prompt

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def trainable(self) -> bool:
        """Trained with the model (``motus-train model.train_vlm``); frozen otherwise."""
        return any(p.requires_grad for p in self.model.parameters())

    @torch.no_grad()
    def __call__(self, image: np.ndarray, text: str) -> torch.Tensor:
        inputs = self.prompt(image, text)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return self.model(**inputs, use_cache=False).last_hidden_state.float()
