"""The text encoder: umT5-XXL's encoder on ``transformers``, loading the files users have.

What the reference computes (``wan/modules/t5.py`` ``T5EncoderModel``): the prompt is cleaned (HTML entities
undone, runs of whitespace collapsed), tokenised with umT5's SentencePiece vocabulary plus the end token ``</s>``
(truncated to 512 tokens), and encoded; only the rows of real tokens are kept: ``[L, 4096]``. The DiT zero-pads
them to ``text_len`` itself.

Files (:func:`load_text_encoder`):

- ComfyUI's ``umt5_xxl_fp16.safetensors`` / ``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` (``models/text_encoders``):
  Hugging Face key names, the SentencePiece model stored inside as the ``spiece_model`` tensor; fp8 weights are
  multiplied back by their ``scale_weight``;
- Wan2.1's ``models_t5_umt5-xxl-enc-bf16.pth`` (the reference's own key names), with the tokenizer given separately;
- a Hugging Face folder (``config.json`` + weights + tokenizer files), e.g. ``google/umt5-xxl``.

The protocol the pipeline needs is just ``text_encoder(prompt) -> [1, L, text_dim]`` (:class:`TextEncoder`).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch

from ..weights import CheckpointError, StateDict, dequantize, from_folder, library_folder, read_tensors

TEXT_LEN = 512  # tokens kept, end token included (reference seq_len)
EOS_ID = 1  # umT5's </s>
PAD_ID = 0


@runtime_checkable
class TextEncoder(Protocol):
    """``encoder(prompt) -> float32 [1, L, text_dim]``: the rows of the prompt's real tokens."""

    def __call__(self, prompt: str) -> torch.Tensor: ...


def clean_prompt(text: str) -> str:
    """The reference's ``clean='whitespace'``: HTML entities undone (twice), whitespace runs collapsed, stripped.

    (The reference also runs ``ftfy.fix_text``, which only changes mis-decoded text such as mojibake.)
    """
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder:
    """umT5's encoder (``transformers.UMT5EncoderModel``) with its tokenizer.

    ``tokenize``: ``str -> list[int]`` of SentencePiece ids *without* the end token (it is added here).
    """

    def __init__(self, model: torch.nn.Module, tokenize: Callable[[str], list[int]], max_length: int = TEXT_LEN):
        self.model = model.eval().requires_grad_(False)
        self.tokenize = tokenize
        self.max_length = max_length

    def token_ids(self, prompt: str) -> list[int]:
        """Cleaned, tokenised, cut to ``max_length - 1`` tokens, then ``</s>`` (what the reference feeds)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        return list(self.tokenize(clean_prompt(prompt)))[: self.max_length - 1] + [EOS_ID]

    def __call__(self, prompt: str) -> torch.Tensor:
        return self.encode_ids(self.token_ids(prompt))

    @torch.no_grad()
    def encode_ids(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Token ids ``[L]`` (end token included) -> float32 ``[1, L, d_model]``."""
        param = next(self.model.parameters())
        ids = torch.as_tensor(ids, dtype=torch.long, device=param.device).reshape(1, -1)
        return self.model(input_ids=ids).last_hidden_state.float()

    def to(self, device: torch.device | str) -> "UMT5TextEncoder":
        self.model.to(device)
        return self


# ----------------------------------------------------------------------------------------------------- loading

# Wan's own key names (the reference's T5Encoder) -> Hugging Face's.
_WAN_T5_KEYS = (
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
)  # fmt: skip


def _hf_keys(state: StateDict, source: str) -> StateDict:
    """Any supported layout -> ``UMT5EncoderModel`` keys (``shared.weight``, ``encoder.block.{i}...``)."""
    state = {k.removeprefix("text_model.").removeprefix("t5xxl.transformer."): v for k, v in state.items()}
    if "token_embedding.weight" in state:  # Wan's .pth
        out = {}
        for key, value in state.items():
            for pattern, repl in _WAN_T5_KEYS:
                new, n = re.subn(pattern, repl, key)
                if n:
                    out[new] = value
                    break
            else:
                raise CheckpointError(f"{source}: unexpected key {key!r} in a Wan umT5 checkpoint")
        return out
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    if "shared.weight" not in state:
        raise CheckpointError(
            f"{source}: not a umT5 text encoder (no 'shared.weight' or 'token_embedding.weight'); expected "
            "ComfyUI's umt5_xxl_*.safetensors, Wan's models_t5_umt5-xxl-enc-bf16.pth or a Hugging Face folder"
        )
    return {k: v for k, v in state.items() if k == "shared.weight" or k.startswith("encoder.")}


def umt5_config(state: StateDict, source: str = "text encoder") -> Any:
    """A ``UMT5Config`` read off the weight shapes (umT5-XXL: d_model 4096, 24 layers, 64 heads, d_ff 10240)."""
    from transformers import UMT5Config

    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.block\.(\d+)\.", k))})
    try:
        vocab, d_model = state["shared.weight"].shape
        buckets, heads = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
        inner = state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
        d_ff = state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{source}: missing {err.args[0]!r}; is this a umT5 encoder?") from None
    return UMT5Config(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=len(blocks),
        num_decoder_layers=0, num_heads=heads, relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )  # fmt: skip


def _sentencepiece(model_proto: bytes | str | Path, source: str) -> Callable[[str], list[int]]:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        if isinstance(model_proto, bytes):
            processor.LoadFromSerializedProto(model_proto)
        else:
            processor.Load(str(model_proto))
    except (RuntimeError, OSError) as err:
        raise CheckpointError(f"{source}: not a SentencePiece model ({err})") from None
    return lambda text: processor.encode(text, out_type=int)


def _tokenizer(tokenizer: Any, state: Mapping[str, torch.Tensor], source: str) -> Callable[[str], list[int]]:
    if callable(tokenizer) and not isinstance(tokenizer, (str, Path)):
        if hasattr(tokenizer, "encode"):  # a transformers tokenizer
            return lambda text: tokenizer.encode(text, add_special_tokens=False)
        return tokenizer
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if path.is_dir():
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            return lambda text: hf.encode(text, add_special_tokens=False)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer not found: {path}")
        return _sentencepiece(path, str(path))
    if "spiece_model" in state:
        return _sentencepiece(state["spiece_model"].cpu().numpy().tobytes(), source)
    raise CheckpointError(
        f"{source}: holds no tokenizer; give the umT5 'spiece.model' file or a Hugging Face tokenizer folder "
        "(google/umt5-xxl) as the tokenizer (--tokenizer on the command line, tokenizer= in Python)"
    )


def load_text_encoder(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    tokenizer: Any = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> UMT5TextEncoder:
    """Load umT5's encoder from a file, a Hugging Face folder or a state dict (see the module docstring).

    ``tokenizer``: a SentencePiece model file, a tokenizer folder, or a callable; not needed for ComfyUI's
    files, which carry theirs. ``dtype``: the compute dtype; by default bfloat16 for 16-bit and fp8 weights (as
    the reference runs it: fp16 overflows in T5) and float32 for float32 weights.
    """
    from transformers import UMT5EncoderModel

    folder = library_folder(source)
    if folder is not None:
        model = from_folder(UMT5EncoderModel, folder, "umT5 encoder folder", dtype=dtype or torch.bfloat16)
        return UMT5TextEncoder(model.to(device), _tokenizer(tokenizer or folder, {}, str(folder)))

    raw, name = read_tensors(source)
    state = _hf_keys(dequantize(raw, name), name)  # what the file is first, then whether it carries a tokenizer
    tokenize = _tokenizer(tokenizer, raw, name)
    config = umt5_config(state, name)
    if dtype is None:
        dtype = torch.float32 if state["shared.weight"].dtype == torch.float32 else torch.bfloat16
    state = {k: v.to(dtype) for k, v in state.items()}
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: does not fit a umT5 encoder of {config.num_layers} layers ({err})") from None
    return UMT5TextEncoder(model.to(device), tokenize)
