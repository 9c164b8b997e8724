"""Attention without a T x T mask: packed (and padded) rows as variable-length documents.

transformers gives packed rows (position ids restarting per sample, no attention mask) a dense
block-diagonal mask under "sdpa", which rules out SDPA's flash kernel; flex_attention has no
backward on CPU, and flash_attention_2 needs the flash-attn package, absent from the image.
"varlen" (registered with transformers' attention interface) cuts the batch into documents where
the position ids restart and runs torch's own variable-length flash kernel
(torch.nn.attention.varlen, in the CUDA wheel) over them: no mask, no padding computed. Elsewhere
(CPU, or a GPU without it) the same documents go through causal SDPA one by one, which is how
the CPU tests check the cut against the dense mask.
"""
from __future__ import annotations

VARLEN = "varlen"
FLASH_CAPABILITY = (8, 0)  # torch's flash kernels: Ampere and newer


def choose(setting: str, on_gpu: bool, capability: tuple[int, int] | None, half_precision: bool,
           flash_attn_installed: bool) -> tuple[str, str]:
    """(transformers' attn_implementation, why) for the attn_implementation setting ("auto": varlen where
    torch's flash kernel runs, i.e. a bf16/fp16 GPU of compute capability 8.0 or newer; else sdpa).
    ValueError for a setting that cannot run here."""
    if setting == "flash_attention_2" and not flash_attn_installed:
        raise ValueError("attn_implementation flash_attention_2 needs the flash-attn package, which this image "
                         "lacks: use auto (varlen: torch's own variable-length flash kernel)")
    if setting == "flex_attention" and not on_gpu:
        raise ValueError("attn_implementation flex_attention has no backward pass on CPU: use auto or sdpa")
    if setting != "auto":
        return setting, "as set"
    if not on_gpu:
        return "sdpa", "no GPU (packed rows get a block-diagonal mask)"
    if capability is None or tuple(capability) < FLASH_CAPABILITY:
        return "sdpa", f"compute capability {capability} has no flash kernel (needs {FLASH_CAPABILITY})"
    if not half_precision:
        return "sdpa", "float32 training: the flash kernel takes bf16/fp16 only"
    return VARLEN, "torch's variable-length flash kernel over the documents of each batch"


def document_bounds(position_ids):
    """(cu_seqlens int32 of the flattened batch, the longest document): a document starts at every row's
    start and wherever the position does not follow the one before (a packed sample, or a pad)."""
    import torch

    flat = position_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1] + 1
    starts[::position_ids.shape[-1]] = True
    first = torch.nonzero(starts).flatten()
    bounds = torch.cat([first, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    return bounds, int((bounds[1:] - bounds[:-1]).max())


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_ids=None,
                     **kwargs):
    """transformers' attention-function signature: query (B, H, T, D), key/value (B, Hkv, T, D);
    returns ((B, T, H, D), None)."""
    import torch
    import torch.nn.functional as F

    if position_ids is None or attention_mask is not None or dropout:
        raise ValueError("varlen attention needs position ids, no attention mask and no dropout (the collator "
                         "gives every row position ids under attn_implementation varlen)")
    batch, heads, length, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value))
    bounds, longest = document_bounds(position_ids.expand(batch, -1))
    if q.is_cuda and torch.cuda.get_device_capability(q.device) >= FLASH_CAPABILITY and q.dtype != torch.float32:
        from torch.nn.attention.varlen import varlen_attn

        out = varlen_attn(q, k, v, bounds, bounds, longest, longest, scale=scaling, window_size=(-1, 0))
    else:
        pieces = []
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            one = [t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]  # (1, H, L, D)
            pieces.append(F.scaled_dot_product_attention(*one, is_causal=True, scale=scaling,
                                                         enable_gqa=heads != k.shape[1])[0].transpose(0, 1))
        out = torch.cat(pieces)
    return out.reshape(batch, length, heads, dim), None


def register() -> None:
    """Make "varlen" an attn_implementation (and its mask: none; the documents come from position ids)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, flash_attention_mask)
