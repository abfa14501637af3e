"""The papers' architectures, exercised on CPU with random weights (issue 28, item 7): OpenAI's ViT-B/32
(open_clip ``ViT-B-32-quickgelu``) and the DDPM CIFAR-10 UNet of ``ddpm-cifar10-32``, built from their
configs; nothing is downloaded. One guided generation step, one CLIP filter pass on two 32 px images and
one bce-clip training step, with the shapes and the 32 px -> 224 px resize path checked. The slow suite
runs a whole paper-profile RODEO cell on a tiny synthetic data set with these architectures."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.backbones.paper import random_paper_backbone
from bench.methods.bce_clip import bce_clip_loss
from bench.methods.clip_common import ClipDetector
from bench.methods.rodeo_exposure import GuidedSampler, label_similarity


@pytest.fixture(scope="module")
def clip():
    return random_paper_backbone("openai-vit-b-32", seed=0)


@pytest.fixture(scope="module")
def ddpm():
    return random_paper_backbone("ddpm-cifar10-32", seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_vit_b_32_takes_cifar_images_through_its_224_px_input(clip, images):
    assert clip.image_hw == (224, 224) and clip.embed_dim == 512
    assert clip.model.visual.conv1.kernel_size == (32, 32)  # ViT-B/32: 32 px patches, 7 x 7 of them
    x = clip.preprocess(images)
    assert x.shape == (2, 3, 224, 224)
    embedding = clip.encode_image(images)
    assert embedding.shape == (2, 512)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    # the resize is differentiable: an input gradient reaches the 32 px pixels
    pixels = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(clip.encode_image(pixels)[:, 0].sum(), pixels)
    assert gradient.shape == (2, 3, 32, 32) and float(gradient.abs().sum()) > 0


def test_the_ddpm_unet_is_the_cifar10_ddpm(ddpm):
    parameters = sum(p.numel() for p in ddpm.unet.parameters())
    assert 35.0e6 < parameters < 36.5e6  # Ho et al. 2020: 35.7M parameters for CIFAR-10
    assert ddpm.num_train_timesteps == 1000
    x = torch.zeros(2, 3, 32, 32)
    assert ddpm.predict_noise(x, torch.tensor([10, 500])).shape == (2, 3, 32, 32)


def test_one_guided_generation_step_and_a_filter_pass(clip, ddpm, images):
    text = clip.encode_text(["a photo of a dog", "a photo of a broken airplane"]).detach()
    x0 = ddpm.to_model_space(images)
    start = torch.tensor([10, 10])  # stride 10: exactly one denoising step, t = 10 -> 0

    def step(scale):
        sampler = GuidedSampler(ddpm, clip, stride=10, guidance_scale=scale, noise_aware=False)
        return sampler.sample(x0, start, text, torch.Generator().manual_seed(1))

    guided, plain = step(1000.0), step(0.0)
    assert guided.shape == (2, 3, 32, 32) and float(guided.abs().max()) <= 1.0
    assert not torch.equal(guided, plain)  # the CLIP's gradient through x0_hat moved the step
    out = ddpm.from_model_space(guided)
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
    similarity = label_similarity(clip, out, ["a photo of a dog", "a photo of an airplane"])
    assert similarity.shape == (2,) and bool(torch.isfinite(similarity).all())


def test_one_bce_clip_training_step_moves_only_the_image_tower(clip, images):
    prompts = ["a photo of a airplane", "a photo of something"]
    detector = ClipDetector(clip, prompts, fine_tuned=True)
    visual = detector.backbone.model.visual
    before = visual.conv1.weight.detach().clone()
    text_before = detector.text_features.clone()
    visual.requires_grad_(True)
    try:
        optimizer = torch.optim.SGD(visual.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        logits = detector.logits(torch.cat([images, torch.rand(2, 3, 32, 32)]))
        assert logits.shape == (4, 2)
        loss = bce_clip_loss(logits[:2], logits[2:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    finally:
        visual.requires_grad_(False)
    assert bool(torch.isfinite(loss)) and not torch.equal(visual.conv1.weight, before)
    assert torch.equal(detector.text_features, text_before)  # the text tower's embeddings stay


@pytest.mark.slow
def test_a_paper_profile_rodeo_cell_on_random_real_architectures(monkeypatch, clip, ddpm):
    """RODEO as the paper profile runs it (WRN-40-4, 100 epochs, PGD-10, stride 10, ViT-B/32 guidance on
    x0_hat, the DDPM CIFAR-10 UNet), on 2 classes x 4 synthetic 32 px images; tau_image given (ImageNet is
    not here). Checks the exposure, the (K+1)-way detector and the rows' backbone label."""
    from bench.backbones.files import backbone_label
    from bench.config import get_profile
    from bench.contracts import RunContext, TrainTask
    from bench.methods import rodeo
    from bench.paper_settings import method_profile

    monkeypatch.setattr(rodeo, "_clip", lambda name, device: clip)
    monkeypatch.setattr(rodeo, "_ddpm", lambda name, device: ddpm)
    profile = method_profile(get_profile("paper"), "rodeo", 32, "cifar10")
    generator = torch.Generator().manual_seed(3)
    task = TrainTask(
        images=torch.rand(8, 3, 32, 32, generator=generator),
        labels=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        class_names=["airplane", "dog"],
        class_prompts=["airplane", "dog"],
        oe=None,
        image_shape=(3, 32, 32),
        train_eps=8 / 255,
        seed=0,
        device="cpu",
        profile=replace(profile, min_steps=0),
    )
    method = rodeo.RODEO(backbones="paper", tau_image=1.0, near_labels=3)
    assert backbone_label(method) == "openai-vit-b-32+ddpm-cifar10-32"
    detector = method.fit(task, RunContext(device="cpu"))
    exposure = detector.meta["training"]
    assert detector.network.head.out_features == 3  # K + 1
    scores = detector.score(torch.rand(4, 3, 32, 32))
    assert scores.shape == (4,) and bool(torch.isfinite(scores).all())
    assert exposure  # the training summary is recorded
