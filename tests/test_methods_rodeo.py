"""RODEO: thresholds (Eq. 13, Eq. 20) on hand-computed cases, the label search, CLIP guidance on a toy
model, generation + filter, and (K+1)-way adversarial training on digits."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from bench.config import get_profile
from bench.contracts import RunContext
from bench.datasets import load_dataset
from bench.datasets.glyph_corpus import NEGATIVE_TEMPLATES
from bench.errors import BadInput
from bench.methods import rodeo as rodeo_module
from bench.methods.rodeo import RODEO, imagenet_class_names
from bench.methods.rodeo_exposure import (
    GuidedSampler,
    draw_start_steps,
    image_threshold,
    near_outlier_prompts,
    start_step_bounds,
    text_threshold,
)
from bench.protocols import get_protocol

# ---------------------------------------------------------------------------------------------------
# thresholds


def test_tau_text_is_the_mean_pairwise_distance():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # ordered pairs: |e1-e2| = sqrt2, |e1-e3| = 2, |e2-e3| = sqrt2, each twice, over M(M-1) = 6
    expected = (2 * math.sqrt(2) + 2) * 2 / 6
    assert text_threshold(embeddings) == pytest.approx(expected)


def test_tau_image_averages_similarity_to_the_other_labels():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    images = F.normalize(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    # image 0 (label 0) vs text 1: 1/sqrt2; image 1 (label 0) vs text 1: 0; image 2 (label 1) vs text 0: 0
    assert image_threshold(images, labels, texts) == pytest.approx((1 / math.sqrt(2)) / 3)


def test_label_search_drops_synonyms_and_adds_negative_prompts_and_others():
    vocabulary = ["near", "synonym", "far", "other side"]
    embedding = {
        "inlier": torch.tensor([1.0, 0.0]),
        "synonym": F.normalize(torch.tensor([1.0, 0.05]), dim=0),  # distance ~0.05 < tau
        "near": F.normalize(torch.tensor([1.0, 1.0]), dim=0),  # distance ~0.77
        "far": F.normalize(torch.tensor([0.3, 1.0]), dim=0),  # similarity 0.29, distance 1.19
        "other side": torch.tensor([-1.0, 0.0]),  # distance 2, similarity -1 -> ~0 probability
    }
    sets = near_outlier_prompts(
        ["inlier"], vocabulary, embedding, 0.5, 2, torch.Generator().manual_seed(0), "all-labels"
    )
    (prompt_set,) = sets
    assert prompt_set.candidates_total == 4 and prompt_set.candidates_kept == 3
    assert "synonym" not in prompt_set.near_labels
    assert prompt_set.near_labels == ["near", "far"]  # sampled by similarity, listed nearest first
    assert len(prompt_set.prompts) == 2 + len(NEGATIVE_TEMPLATES) + 1
    assert prompt_set.prompts[-1] == "a photo of the others"
    assert "a photo of a broken inlier" in prompt_set.prompts


def _two_class_embeddings():
    """Inlier labels a (along x) and b (along y); one candidate next to each, one far from both."""
    return {
        "a": torch.tensor([1.0, 0.0, 0.0]),
        "b": torch.tensor([0.0, 1.0, 0.0]),
        "near a": F.normalize(torch.tensor([1.0, 0.1, 0.3]), dim=0),  # ~0.32 from a, ~1.4 from b
        "near b": F.normalize(torch.tensor([0.1, 1.0, 0.3]), dim=0),
        "far": F.normalize(torch.tensor([0.3, 0.3, 1.0]), dim=0),  # ~1.2 from both
    }


def test_line5_filter_keeps_the_own_label_neighbours_and_drops_the_other_labels():
    embedding = _two_class_embeddings()
    vocabulary = ["near a", "near b", "far", "a"]  # "a" is an inlier label: never a candidate
    sets = near_outlier_prompts(
        ["a", "b"], vocabulary, embedding, 0.5, 5, torch.Generator().manual_seed(0), "other-labels"
    )
    # Alg. 1 line 5: class a drops what is near b (an other label) and keeps its own neighbour
    assert sorted(sets[0].near_labels) == ["far", "near a"]
    assert sorted(sets[1].near_labels) == ["far", "near b"]
    assert sets[0].near_labels[0] == "near a" and sets[1].near_labels[0] == "near b"  # nearest first
    assert [(p.candidates_kept, p.candidates_total) for p in sets] == [(2, 3), (2, 3)]
    # the earlier rule drops every candidate near any inlier label: both classes keep only "far"
    old = near_outlier_prompts(
        ["a", "b"], vocabulary, embedding, 0.5, 5, torch.Generator().manual_seed(0), "all-labels"
    )
    assert [p.near_labels for p in old] == [["far"], ["far"]]
    assert [p.candidates_kept for p in old] == [1, 1]


def test_line5_filter_removes_nothing_with_one_inlier_class():
    embedding = _two_class_embeddings()
    (prompt_set,) = near_outlier_prompts(
        ["a"], ["near a", "near b", "far"], embedding, 0.5, 5, torch.Generator().manual_seed(0)
    )
    assert prompt_set.candidates_kept == prompt_set.candidates_total == 3  # Y \ {a} is empty
    assert prompt_set.near_labels[0] == "near a"
    with pytest.raises(ValueError, match="other-labels, all-labels"):
        near_outlier_prompts(["a"], ["far"], embedding, 0.5, 1, torch.Generator(), "own-label")


def test_start_steps_lie_on_the_stride_grid_within_the_range():
    steps = draw_start_steps(2000, 0, 600, 10, torch.Generator().manual_seed(0))
    assert int(steps.min()) == 10 and int(steps.max()) == 600
    assert bool((steps % 10 == 0).all())
    assert 250 < float(steps.float().mean()) < 350  # U(0, 600)


@pytest.mark.parametrize(
    ("rule", "stride", "bounds", "lowest", "mean"),
    [
        ("table10", 25, (0, 600), 25, 312.5),  # Table 10: (0, 600)
        ("sec4.1", 25, (300, 600), 300, 450.0),  # Sec. 4.1: U(0.3T, 0.6T)
        ("alg1", 25, (300, 975), 300, 637.5),  # Alg. 1 line 12: U(T0, T), T0 = 0.3T, capped at T - 1
        ("table10", 10, (0, 600), 10, 305.0),
        ("alg1", 10, (300, 990), 300, 645.0),
    ],
)
def test_each_t0_rule_draws_within_its_range(rule, stride, bounds, lowest, mean):
    assert start_step_bounds(rule, 1000, stride, 0.3, 0.6) == bounds
    steps = draw_start_steps(20_000, *bounds, stride, torch.Generator().manual_seed(0))
    assert int(steps.min()) == lowest and int(steps.max()) == bounds[1]  # every grid point is reachable
    assert bool((steps % stride == 0).all())
    assert float(steps.float().mean()) == pytest.approx(mean, abs=6.0)  # uniform over the grid points
    grid = torch.arange(lowest, bounds[1] + 1, stride)
    counts = torch.stack([(steps == g).sum() for g in grid]).float()
    assert float(counts.min()) > 0.7 * float(counts.mean())


def test_t0_rules_follow_the_fractions():
    assert start_step_bounds("sec4.1", 1000, 10, 0.2, 0.5) == (200, 500)
    assert start_step_bounds("alg1", 1000, 10, 0.0, 0.6) == (0, 990)
    assert start_step_bounds("table10", 1000, 25, 0.3, 0.5) == (0, 500)
    t_min, t_max = RODEO(t0_rule="sec4.1", stride=25).start_step_range(1000, 25)
    assert (t_min, t_max) == (300, 600)


# ---------------------------------------------------------------------------------------------------
# toy backbones: a linear "CLIP" and a "DDPM" whose noise prediction is zero


class ToyClip(torch.nn.Module):
    name = "toy-clip"
    info = {"weights_sha256": "toy"}
    source = "test"

    def __init__(self, side: int = 8, dim: int = 6):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.side = side
        self.weight = torch.randn(dim, side * side, generator=generator)
        self.words: dict[str, torch.Tensor] = {}
        self.dim = dim

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.mean(1, keepdim=True), size=(self.side, self.side), mode="bilinear")
        return F.normalize(x.flatten(1) @ self.weight.T, dim=1)

    def encode_text(self, texts) -> torch.Tensor:
        rows = []
        for text in [texts] if isinstance(texts, str) else texts:
            if text not in self.words:
                seed = sum(ord(c) * (i + 1) for i, c in enumerate(text)) % (2**31)
                self.words[text] = F.normalize(
                    torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)), dim=0
                )
            rows.append(self.words[text])
        return torch.stack(rows)


class ToyDDPM(torch.nn.Module):
    name = "toy-ddpm"
    info = {"weights_sha256": "toy"}
    source = "test"
    num_train_timesteps = 100
    image_size = 16

    def __init__(self):
        super().__init__()
        betas = torch.linspace(1e-4, 0.05, self.num_train_timesteps)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    def predict_noise(self, x_t, t):
        return torch.zeros_like(x_t)

    def to_model_space(self, images01):
        return F.interpolate(images01, size=(16, 16), mode="bilinear") * 2 - 1

    def from_model_space(self, x):
        return ((x + 1) / 2).clamp(0, 1)


def test_guidance_raises_clip_similarity_to_the_prompt():
    clip, ddpm = ToyClip(), ToyDDPM()
    x0 = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    text = clip.encode_text(["a photo of the target"]).expand(64, -1)
    t_init = torch.full((64,), 50)

    def similarity(scale: float) -> float:
        sampler = GuidedSampler(ddpm, clip, stride=5, guidance_scale=scale, noise_aware=True)
        out = sampler.sample(x0, t_init, text, torch.Generator().manual_seed(0))
        return float((clip.encode_image((out + 1) / 2) * text).sum(1).mean())

    unguided, guided = similarity(0.0), similarity(200.0)
    assert guided > unguided + 0.1, (unguided, guided)


def test_sampler_keeps_images_that_start_late_untouched_until_their_start():
    clip, ddpm = ToyClip(), ToyDDPM()
    x0 = torch.zeros(2, 1, 16, 16)
    text = clip.encode_text(["a", "b"])
    sampler = GuidedSampler(ddpm, clip, stride=10, guidance_scale=0.0, noise_aware=True)
    out = sampler.sample(x0, torch.tensor([10, 90]), text, torch.Generator().manual_seed(0))
    assert out.shape == x0.shape and float(out.abs().max()) <= 1.0
    # with zero predicted noise, starting later only adds (then partly removes) more noise
    assert float((out[0] - x0[0]).abs().mean()) < float((out[1] - x0[1]).abs().mean())


# ---------------------------------------------------------------------------------------------------
# generation, filter, training on digits (ci profile, toy backbones)


@pytest.fixture
def toy_backbones(monkeypatch):
    clip, ddpm = ToyClip(), ToyDDPM()
    monkeypatch.setattr(rodeo_module, "_clip", lambda name, device: clip)
    monkeypatch.setattr(rodeo_module, "_ddpm", lambda name, device: ddpm)
    monkeypatch.setattr(rodeo_module, "validation_image_threshold", lambda name, device: 0.0)
    return clip, ddpm


@pytest.fixture(scope="module")
def nd_task():
    cell = next(get_protocol("nd").cells(load_dataset("digits"), get_profile("ci"), 0))
    return cell.task


@pytest.fixture(scope="module")
def osr_task():
    cell = next(get_protocol("osr").cells(load_dataset("digits"), get_profile("ci"), 0))
    return cell.task


def test_generation_shape_range_counts_and_filter(toy_backbones, osr_task):
    method = RODEO(stride=50, guidance_scale=50.0, tau_image=0.1)
    tensors, meta = method.generate(osr_task, "cpu")
    images = tensors["images"]
    counts = method.generation_counts(osr_task)
    assert images.shape == (sum(counts), *osr_task.image_shape)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    # every class generates as many outliers as it has images (digits classes have >= 100)
    assert counts == torch.bincount(osr_task.labels).tolist()
    assert torch.equal(tensors["kept"], tensors["similarity"] < 0.1)
    assert 0 < meta["kept"] < meta["generated"]
    assert meta["keep_rate"] == pytest.approx(meta["kept"] / meta["generated"])
    assert len(meta["prompt_sets"]) == osr_task.num_classes
    assert meta["guidance_on"].startswith("x_t")


def test_small_classes_get_the_scaled_minimum(nd_task):
    small = dataclasses.replace(nd_task, images=nd_task.images[:40], labels=nd_task.labels[:40])
    method = RODEO()
    # ci profile: OE pool 1,000 of the paper's 100,000 -> 3,000 x 0.01 = 30 < 40 images: 40
    assert method.generation_counts(small) == [40]
    assert RODEO(small_class_count=10_000).generation_counts(small) == [100]


def test_generation_is_capped_by_the_field_or_the_cpu_profile(nd_task):
    """One outlier per inlier (Alg. 1 line 10) unless capped: the field, else the profile's cap."""
    n = len(nd_task.images)
    assert RODEO().generation_counts(nd_task) == [n]  # ci: no cap
    assert RODEO(generated_per_class=7).generation_counts(nd_task) == [7]
    reference = dataclasses.replace(nd_task, profile=get_profile("reference"))
    big = dataclasses.replace(
        reference, images=nd_task.images.repeat(20, 1, 1, 1), labels=nd_task.labels.repeat(20)
    )
    assert 20 * n > 2000 and RODEO().generation_counts(big) == [2000]  # one per inlier up to 2,000
    assert RODEO(generated_per_class=3000).generation_counts(big) == [min(20 * n, 3000)]
    with pytest.raises(BadInput, match="generated_per_class"):
        RODEO(generated_per_class=0)


def _training_spy(monkeypatch):
    from bench.methods import training

    seen = {}
    original = training.train_network

    def spy(network, task, loss_fn, uses_oe, epoch_outliers=None, optimizer_factory=None):
        seen.update(task=task, uses_oe=uses_oe, optimizer=optimizer_factory(network.parameters()))
        short = dataclasses.replace(task, profile=dataclasses.replace(task.profile, epochs=1, min_steps=2))
        return original(network, short, loss_fn, uses_oe, epoch_outliers, optimizer_factory)

    monkeypatch.setattr(training, "train_network", spy)
    return seen


def test_training_data_has_k_plus_1_classes(toy_backbones, osr_task, tmp_path, monkeypatch):
    from bench.cache import DetectorCache

    seen = _training_spy(monkeypatch)
    method = RODEO(stride=50, guidance_scale=50.0, tau_image=0.2)
    detector = method.fit(osr_task, RunContext(device="cpu", cache=DetectorCache(tmp_path)))
    logits = detector.network(osr_task.images[:4])
    assert logits.shape == (4, osr_task.num_classes + 1)
    assert detector.score_name == "extra_class"
    assert isinstance(seen["optimizer"], torch.optim.Adam)
    assert seen["optimizer"].param_groups[0]["lr"] == 1e-3  # Table 9
    # Alg. 1 line 22: one set D_in u D_exposure, the exposure labelled K, no separate OE stream
    task, kept = seen["task"], detector.meta["exposure"]["kept"]
    assert seen["uses_oe"] is False and task.oe is None
    assert kept > 0 and len(task.images) == len(osr_task.images) + kept == len(task.labels)
    assert torch.equal(task.images[: len(osr_task.images)], osr_task.images)
    assert torch.equal(task.labels[: len(osr_task.labels)], osr_task.labels)
    assert bool((task.labels[len(osr_task.labels) :] == osr_task.num_classes).all())
    assert task.num_classes == osr_task.num_classes + 1
    assert sum(detector.meta["exposure"]["kept_per_class"]) == kept
    assert detector.meta["training"]["train_set"] == "union"
    # the exposure is cached: a second fit regenerates nothing, also with the other training set
    monkeypatch.setattr(RODEO, "generate", lambda *a, **k: pytest.fail("regenerated a cached exposure"))
    method.fit(osr_task, RunContext(device="cpu", cache=DetectorCache(tmp_path)))
    balanced = dataclasses.replace(method, train_set="balanced")
    assert balanced.exposure_payload(osr_task) == method.exposure_payload(osr_task)
    detector = balanced.fit(osr_task, RunContext(device="cpu", cache=DetectorCache(tmp_path)))
    # the earlier scheme: the inliers, and the exposure as an OE stream of inlier-sized batches
    task = seen["task"]
    assert seen["uses_oe"] is True and torch.equal(task.images, osr_task.images)
    assert len(task.oe.images) == detector.meta["exposure"]["kept"]
    assert task.profile.oe_batch_size == task.profile.batch_size


def test_union_training_set_size_and_labels(nd_task):
    exposure = torch.rand(17, *nd_task.image_shape)
    union = RODEO().training_task(nd_task, exposure)
    assert len(union.images) == len(nd_task.images) + 17 == len(union.labels)
    assert torch.bincount(union.labels).tolist() == [len(nd_task.images), 17]  # inliers 0, exposure K = 1
    assert union.oe is None and union.num_classes == 2
    assert union.fingerprint() != nd_task.fingerprint()


def test_artifacts_grid_and_keep_rate(toy_backbones, nd_task, tmp_path):
    from bench.cache import DetectorCache

    method = RODEO(stride=50, guidance_scale=50.0, tau_image=0.2)
    method.write_artifacts(nd_task, RunContext(device="cpu", cache=DetectorCache(tmp_path)), tmp_path / "a")
    assert (tmp_path / "a" / "exposure.png").stat().st_size > 1000
    record = (tmp_path / "a" / "exposure.json").read_text()
    assert '"keep_rate"' in record and '"tau_text"' in record


# ---------------------------------------------------------------------------------------------------
# configuration


def test_bad_settings_are_rejected():
    with pytest.raises(BadInput, match="t0_max_fraction"):
        RODEO(t0_max_fraction=0.0)
    with pytest.raises(BadInput, match="accepted: table10, sec4.1, alg1"):
        RODEO(t0_rule="uniform")
    with pytest.raises(BadInput, match="t0_min_fraction < t0_max_fraction"):
        RODEO(t0_rule="sec4.1", t0_min_fraction=0.6)
    with pytest.raises(BadInput, match="t0_min_fraction"):
        RODEO(t0_min_fraction=1.0)
    with pytest.raises(BadInput, match="accepted: other-labels, all-labels"):
        RODEO(label_filter="own-label")
    with pytest.raises(BadInput, match="accepted: union, balanced"):
        RODEO(train_set="mixed")
    with pytest.raises(BadInput, match="vocabulary"):
        RODEO(vocabulary="wordnet")
    with pytest.raises(BadInput, match="stride"):
        RODEO(stride=0)
    with pytest.raises(BadInput, match=r"inlier_round_trip must lie in \[0, 1\], got 1.5"):
        RODEO(inlier_round_trip=1.5)


def _laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(images, kernel).var(dim=(1, 2, 3))


def test_inlier_round_trip_blurs_only_the_chosen_inliers_like_the_exposure():
    """The remedy sends inliers (never the exposure, label K) through the DDPM's 16x16 and back: they lose
    the fine detail the generated outliers lack; the share follows the field."""
    method = RODEO(inlier_round_trip=0.5)
    task = dataclasses.make_dataclass("T", ["num_classes", "image_shape"])(1, (1, 28, 28))
    ddpm = rodeo_module._ddpm(method.ddpm_backbone, "cpu")
    x = torch.rand(400, 1, 28, 28)
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    out = method.round_trip_inliers(x, y, task, ddpm, torch.Generator().manual_seed(0))
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert not changed[300:].any() and 120 <= int(changed[:300].sum()) <= 180
    assert (_laplacian_variance(out[changed]) < 0.2 * _laplacian_variance(x[changed])).all()
    assert torch.equal(out[~changed], x[~changed]) and out.shape == x.shape
    none = RODEO(inlier_round_trip=0.0).round_trip_inliers(x, y, task, ddpm, torch.Generator())
    assert torch.equal(none, x)


def test_vocabulary_follows_the_clip_backbone():
    assert RODEO().vocabulary_name() == "glyph-concepts"
    assert RODEO(clip_backbone="hub-clip:ViT-B-32@/x.bin").vocabulary_name() == "imagenet-1k"
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and len(set(names)) > 990
