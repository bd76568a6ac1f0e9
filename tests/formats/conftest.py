"""Stable Diffusion LoRAs made by diffusers itself from a tiny UNet and CLIP text encoder, and a
loralib checkpoint made by loralib: the real writers, built from configs in seconds."""

from __future__ import annotations

import pytest
import torch


def tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))


def tiny_pipeline():
    """A StableDiffusionPipeline of tiny random parts (no tokenizer: only LoRA loading is tested)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    return StableDiffusionPipeline(vae=vae, text_encoder=tiny_text_encoder(), tokenizer=None, unet=tiny_unet(),
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@pytest.fixture(scope="session")
def diffusers_lora(tmp_path_factory):
    """(folder, {key: tensor}): ``pytorch_lora_weights.safetensors`` written by diffusers'
    ``save_lora_weights`` for a UNet LoRA (r=4) and a text encoder LoRA (r=2)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                              target_modules=["to_q", "to_k", "to_v", "to_out.0"]), tiny_unet())
    text_encoder = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian",
                                                      target_modules=["q_proj", "v_proj"]), tiny_text_encoder())
    with torch.no_grad():  # B starts at zero; make both factors non-trivial
        for name, param in [*unet.named_parameters(), *text_encoder.named_parameters()]:
            if "lora_B" in name:
                param.normal_()
    folder = tmp_path_factory.mktemp("diffusers-lora")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              text_encoder_lora_layers=get_peft_model_state_dict(text_encoder))
    from safetensors.torch import load_file

    return folder, load_file(folder / "pytorch_lora_weights.safetensors")
