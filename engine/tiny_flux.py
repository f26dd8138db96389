"""The built-in Flux.1-shaped test model: ``loratui:tiny-flux``, built in code, never downloaded.

It has the parts and module names of FLUX.1 [dev] as diffusers lays it out, with tiny widths, so
the LoRA keys, the kohya (BFL) name mapping, the two-encoder text conditioning and the loading
paths are those of a real Flux run:

- a FluxTransformer2DModel: 64 input channels (16 latent channels packed in 2x2 patches, patch
  size 1), one double-stream block (``transformer_blocks``) and one single-stream block
  (``single_transformer_blocks``) where dev has 19 and 38, RoPE axes that add up to the head
  width, and the guidance embedding of dev (schnell has none);
- text encoder 1, a CLIPTextModel whose pooled output is the transformer's ``pooled_projections``
  (CLIP ViT-L's role), with the byte-level CLIP tokenizer of ``loratui:tiny-sd``;
- text encoder 2, a T5EncoderModel with T5 v1.1's gated-gelu feed-forward (T5-XXL's role: its
  token states are the transformer's ``encoder_hidden_states``), with a T5 tokenizer built here;
- Flux's AutoencoderKL layout (16 latent channels, 8x down, no quant convs) with its scaling
  factor 0.3611 and shift factor 0.1159, and dev's flow-matching scheduler config.

The two text encoders have different widths (T5 wider, as in Flux), so a swapped pair is a shape
error rather than a silent mix-up. Widths and depths are small and the weights random (seeded, so
every build is identical). It is written once as a diffusers FluxPipeline folder under the cache
dir, as ``loratui:tiny-sd`` is (engine/tiny_model.py), and loaded through the same code as any
user's Flux folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.tiny_model import build_once, byte_level_vocab, tiny_vae
from loratui.paths import cache_dir

TINY_FLUX_NAME = "loratui:tiny-flux"
# Bump when the architecture or the weights change, so old caches are not reused.
_BUILD_VERSION = "1"
_SEED = 20240801  # the day FLUX.1 was published; any fixed number would do

LATENT_CHANNELS = 16  # the AE's latent channels, as Flux's
CLIP_WIDTH = 32  # text encoder 1's hidden size = pooled_projection_dim (CLIP ViT-L: 768)
T5_WIDTH = 48  # text encoder 2's d_model = joint_attention_dim (T5-XXL: 4096)
HEAD_DIM = 16  # attention_head_dim (dev: 128)
HEADS = 4  # num_attention_heads (dev: 24); the transformer's width is HEADS * HEAD_DIM
ROPE_AXES = (4, 6, 6)  # axes_dims_rope, summing to HEAD_DIM like dev's (16, 56, 56) sum to 128
T5_MAX_LENGTH = 512  # FluxPipeline's max_sequence_length for dev

# T5's special tokens and their ids, as in every T5 vocabulary.
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
_SPACE = "▁"  # SentencePiece's word-start marker


def tiny_flux_dir() -> Path:
    return cache_dir() / f"tiny-flux-v{_BUILD_VERSION}"


def ensure_tiny_flux() -> Path:
    """Build the tiny Flux folder if it is not there yet and return its path."""
    return build_once(tiny_flux_dir(), _build_into)


def write_flux_model_index(folder: Path) -> None:
    """The model_index.json of a FluxPipeline folder (what diffusers' from_pretrained reads)."""
    index = {
        "_class_name": "FluxPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def t5_vocab() -> list[tuple[str, float]]:
    """A SentencePiece-Unigram vocabulary of single characters: T5's three special tokens at ids
    0-2, the word-start marker, then printable ASCII, Latin-1 and Latin Extended-A letters.

    T5's tokenizer has no byte fallback (recent transformers rebuild every T5 tokenizer with
    ``byte_fallback=False`` from the file's vocabulary alone), so a character outside the
    vocabulary becomes ``<unk>``, as CJK text does with the real T5 v1.1 vocabulary."""
    characters = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    characters += [chr(c) for c in range(0xA1, 0x180) if c != 0xAD]  # Latin-1 and Extended-A, no soft hyphen
    pieces = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0), (_SPACE, -1.0)]
    return pieces + [(character, -2.0) for character in characters]


def t5_tokenizer():
    """T5's tokenizer pipeline over ``t5_vocab``: whitespace split, ``▁`` marking word starts, and
    ``</s>`` after every text. It is the pipeline transformers builds for any T5 tokenizer, so the
    saved file reads back the same with transformers 4 (as written) and 5 (rebuilt from its vocab)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    backend = Tokenizer(Unigram(t5_vocab(), unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", T5_EOS], pair=["$A", T5_EOS, "$B", T5_EOS], special_tokens=[(T5_EOS, 1)]
    )
    # extra_ids=0: no <extra_id_N> sentinels, which only T5's span-corruption pretraining uses.
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token=T5_EOS,
        unk_token=T5_UNK,
        pad_token=T5_PAD,
        extra_ids=0,
        model_max_length=T5_MAX_LENGTH,
    )


def _clip_config(vocab: dict[str, int]):
    from transformers import CLIPTextConfig

    end = vocab["<|endoftext|>"]
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=CLIP_WIDTH,
        intermediate_size=2 * CLIP_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",  # CLIP ViT-L's
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=end,
        pad_token_id=end,
        projection_dim=CLIP_WIDTH,
    )


def _t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=T5_WIDTH,
        d_kv=HEAD_DIM,
        d_ff=2 * T5_WIDTH,
        num_layers=2,
        num_heads=3,
        feed_forward_proj="gated-gelu",  # T5 v1.1's (the original T5: relu)
        tie_word_embeddings=False,  # v1.1 unties them
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def _build_into(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel

    vocab, merges = byte_level_vocab()
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(folder / "tokenizer")
    t5_tokenizer().save_pretrained(folder / "tokenizer_2")

    torch.manual_seed(_SEED)
    CLIPTextModel(_clip_config(vocab)).save_pretrained(folder / "text_encoder")
    T5EncoderModel(_t5_config(len(t5_vocab()))).save_pretrained(folder / "text_encoder_2")

    tiny_vae(  # the 8x downsampling of Flux's ch_mult (1, 2, 4, 4)
        latent_channels=LATENT_CHANNELS,
        scaling_factor=0.3611,  # Flux's: latents = 0.3611 * (z - 0.1159)
        shift_factor=0.1159,
        use_quant_conv=False,  # Flux's AE has neither quant conv
        use_post_quant_conv=False,
        force_upcast=True,
    ).save_pretrained(folder / "vae")

    FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # 2x2 packed latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=True,  # dev is guidance-distilled
        axes_dims_rope=ROPE_AXES,
    ).save_pretrained(folder / "transformer")

    # FLUX.1-dev's scheduler/scheduler_config.json.
    FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    ).save_pretrained(folder / "scheduler")
    write_flux_model_index(folder)
