"""Tests of trainables/views.py against torchvision's per-sample functional ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from torchvision.transforms import InterpolationMode

from trainables.views import (
    LUMA,
    ViewConfig,
    ViewMaker,
    blur_kernel_size,
    sample_crop_boxes,
    torchvision_reference_pipeline,
)
from trainables.views import _adjust_hue  # noqa: PLC2701  (checked directly against torchvision)

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)

OFF = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, size: int, seed: int = 0, dtype=torch.uint8) -> torch.Tensor:
    """Random but spatially smooth images (bilinear-upsampled noise), uint8 or float."""
    g = gen(seed)
    low = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    img = img + 0.05 * torch.rand(n, 3, size, size, generator=g)
    img = img.clamp(0, 1)
    if dtype == torch.uint8:
        return (img * 255).round().to(torch.uint8)
    return img.to(dtype)


def unnormalise(v: torch.Tensor) -> torch.Tensor:
    return v * STD + MEAN


def reference_view(img: torch.Tensor, p, i: int, cfg: ViewConfig) -> torch.Tensor:
    """Sample i of a view, built with torchvision.transforms.functional one op at a time."""
    x = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    if p.kind == "original":  # torchvision's Resize (antialiased; on uint8 its uint8 kernel)
        if img.dtype == torch.uint8:
            x = TF2.resize(img, [cfg.size, cfg.size], antialias=True).float() / 255.0
        else:
            x = TF.resize(x, [cfg.size, cfg.size], antialias=True)
    else:
        x0, y0, x1, y1 = (int(round(v)) for v in p.boxes[i].tolist())
        x = TF.resized_crop(x, y0, x0, y1 - y0, x1 - x0, [cfg.size, cfg.size],
                            InterpolationMode.BILINEAR, antialias=False)

    def gray(t):
        return TF.rgb_to_grayscale(t, num_output_channels=3)

    if cfg.grayscale_first and p.grayscale[i]:
        x = gray(x)
    if p.jitter[i]:
        for op in p.order[i].tolist():
            if not p.enabled[op]:
                continue
            if op == 0:
                x = TF.adjust_brightness(x, p.brightness[i].item())
            elif op == 1:
                x = TF.adjust_contrast(x, p.contrast[i].item())
            elif op == 2:
                x = TF.adjust_saturation(x, p.saturation[i].item())
            else:
                x = TF.adjust_hue(x, p.hue[i].item())
    if not cfg.grayscale_first and p.grayscale[i]:
        x = gray(x)
    if p.blur_enabled and p.blur[i]:
        k = cfg.resolved_blur_kernel_size
        x = TF.gaussian_blur(x, [k, k], [p.sigma[i].item()] * 2)
    if p.flip[i]:
        x = TF.hflip(x)
    return TF.normalize(x, cfg.mean, cfg.std)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def test_original_view_without_augmentation_is_resize_of_whole_image():
    """The original view is torchvision's Resize((R, R)) of the whole image (bilinear with
    antialias; for uint8 input torchvision's own uint8 kernel), no crop."""
    size, out = 64, 48
    img = smooth_images(4, size)
    # distinct coloured corners: red, green, blue, white 8x8 patches
    img[:, :, :8, :8] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    img[:, :, :8, -8:] = torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1)
    img[:, :, -8:, :8] = torch.tensor([0, 0, 255], dtype=torch.uint8).view(3, 1, 1)
    img[:, :, -8:, -8:] = 255
    vm = ViewMaker(ViewConfig(size=out, **OFF))
    (v,) = vm(img, ["original"], gen())
    assert v.shape == (4, 3, out, out) and v.dtype == torch.float32
    ref = TF2.resize(img, [out, out], antialias=True).float() / 255  # transforms.v2, uint8 kernel
    torch.testing.assert_close(unnormalise(v), ref, atol=2e-5, rtol=0)
    # transforms v1 resizes uint8 in float and rounds: within one level
    ref_v1 = TF.resize(img, [out, out], antialias=True).float() / 255
    torch.testing.assert_close(unnormalise(v), ref_v1, atol=1.01 / 255, rtol=0)
    # float input: the same resize in float (differs from the uint8 kernel by its rounding)
    (vf,) = vm(img.float() / 255, ["original"], gen())
    ref_f = TF.resize(img.float() / 255, [out, out], antialias=True)
    torch.testing.assert_close(unnormalise(vf), ref_f, atol=2e-5, rtol=0)
    torch.testing.assert_close(vf, v, atol=1.01 / 255 / 0.224, rtol=0)
    # a plain (non-antialiased) bilinear resize agrees loosely: the whole image is kept.
    plain = F.interpolate(img.float() / 255, size=(out, out), mode="bilinear", align_corners=False)
    assert (unnormalise(v) - plain).abs().mean() < 0.01
    px = unnormalise(v)
    for (r, c), colour in {(0, 0): (1, 0, 0), (0, -1): (0, 1, 0), (-1, 0): (0, 0, 1),
                           (-1, -1): (1, 1, 1)}.items():
        torch.testing.assert_close(px[:, :, r, c], torch.tensor(colour).float().expand(4, 3),
                                   atol=1e-4, rtol=0)
    # eval_view is the same deterministic transform
    torch.testing.assert_close(vm.eval_view(img), v)


def test_eval_view_same_size_is_identity_plus_normalise():
    img = smooth_images(3, 32)
    vm = ViewMaker(ViewConfig(size=32))  # augmentations on: eval_view must ignore them
    e = vm.eval_view(img)
    torch.testing.assert_close(e, (img.float() / 255 - MEAN) / STD, atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_semantics():
    n, h, w = 4000, 96, 128
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(n, h, w, gen(1), scale, ratio)
    assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
    x0, y0, x1, y1 = boxes.unbind(1)
    bw, bh = x1 - x0, y1 - y0
    assert torch.equal(boxes, boxes.round()), "torchvision boxes are integer"
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert (bw > 0).all() and (bh > 0).all()
    frac = bw * bh / (h * w)
    # rounding w and h to integers moves area and aspect slightly off the sampled values
    assert frac.min() >= scale[0] * 0.9 and frac.max() <= scale[1] + 1e-6
    aspect = bw / bh
    assert aspect.min() >= ratio[0] * 0.93 and aspect.max() <= ratio[1] / 0.93
    # E[scale] = 0.6 for candidates; the fit constraint lowers it (large crops with a ratio away
    # from the image's fail and get retried): torchvision's sampler gives 0.4995 at 96 x 128
    assert abs(frac.mean().item() - 0.4995) < 0.01
    # positions spread over the image: both borders get touched
    assert (x0 == 0).any() and (x1 == w).any() and (y0 == 0).any() and (y1 == h).any()
    # fallback: an impossible scale (only via extreme aspect) uses the centre crop
    fb = sample_crop_boxes(8, 10, 100, gen(2), (0.9, 1.0), ratio)  # 10x100 never fits 0.9*area
    fw = int(round(10 * ratio[1]))  # height 10, width clamped to ratio 4/3
    x0 = (100 - fw) // 2
    expected = torch.tensor([[x0, 0, x0 + fw, 10]], dtype=torch.float32).expand(8, 4)
    assert torch.equal(fb, expected)


def test_crop_box_mean_scale_matches_torchvision_sampler():
    # torchvision's own get_params, 3000 draws, vs ours: the mean area fraction agrees.
    import torchvision.transforms as T

    torch.manual_seed(0)
    h = w = 64
    tv = [T.RandomResizedCrop.get_params(torch.empty(3, h, w), [0.2, 1.0], [3 / 4, 4 / 3])
          for _ in range(3000)]
    tv_frac = sum(hh * ww for _, _, hh, ww in tv) / (3000 * h * w)
    b = sample_crop_boxes(3000, h, w, gen(3))
    ours = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).mean().item() / (h * w)
    assert abs(ours - tv_frac) < 0.02


@pytest.mark.parametrize("src,out", [(40, 32), (24, 32)])
def test_crop_view_without_augmentation_equals_resized_crop_of_its_box(src, out):
    img = smooth_images(6, src, seed=4)
    cfg = ViewConfig(size=out, **OFF)
    vm = ViewMaker(cfg)
    g = gen(5)
    p = vm.sample_params("crop", 6, src, src, g)
    (v,) = vm.render(img, [p])
    for i in range(6):
        x0, y0, x1, y1 = (int(t) for t in p.boxes[i].tolist())
        ref = TF.resized_crop(img[i].float() / 255, y0, x0, y1 - y0, x1 - x0, [out, out],
                              InterpolationMode.BILINEAR, antialias=False)
        torch.testing.assert_close(unnormalise(v[i]), ref, atol=3e-5, rtol=0)
    # and __call__ with the same generator state reproduces render()
    (v2,) = vm(img, ["crop"], gen(5))
    torch.testing.assert_close(v2, v, atol=0, rtol=0)


def test_flip_is_mirror_of_unflipped_view():
    img = smooth_images(5, 40, seed=6)
    vm = ViewMaker(ViewConfig(size=32, **OFF))
    p = vm.sample_params("crop", 5, 40, 40, gen(7))
    p_flip = p.index(slice(None))
    p_flip.flip = torch.ones(5, dtype=torch.bool)
    a, b = vm.render(img, [p, p_flip])
    torch.testing.assert_close(b, a.flip(3), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Colour ops vs torchvision, per sample
# ---------------------------------------------------------------------------------------------


def test_hue_closed_form_matches_torchvision_adjust_hue():
    g = gen(8)
    x = torch.rand(16, 3, 9, 11, generator=g)
    x[0] = 0.5  # gray: hue undefined
    x[1, 0] = x[1, 1]  # ties between channels
    x[2, 1] = x[2, 2]
    x[3] = (x[3] * 4).round() / 4  # many exact ties / sector boundaries
    hue = torch.rand(16, generator=g) - 0.5
    hue[4] = 0.5
    hue[5] = -0.5
    ours = _adjust_hue(x, hue)
    for i in range(16):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], hue[i].item()), atol=2e-6, rtol=0)


@pytest.mark.parametrize("preset", ["v2", "v1"])
@pytest.mark.parametrize("sync_free", [False, True])
def test_full_pipeline_matches_torchvision_functional_per_sample(preset, sync_free):
    """Every op at its torchvision definition, per-sample factors, random order, both presets,
    both the index-subset (CPU) and the sync-free (CUDA-style) code paths."""
    n, src, out = 24, 40, 32
    img = smooth_images(n, src, seed=9)
    # strong probabilities so that every branch is exercised in 24 samples
    cfg = ViewConfig(size=out, preset=preset, grayscale_prob=0.3, blur_prob=0.6 if preset == "v2" else None,
                     blur_kernel_size=5 if preset == "v2" else None)
    vm = ViewMaker(cfg, sync_free=sync_free, chunk_size=7)
    g = gen(10)
    params = [vm.sample_params(k, n, src, src, g) for k in ("original", "crop")]
    views = vm.render(img, params)
    p = params[1]
    assert p.jitter.any() and p.grayscale.any() and p.flip.any() and (~p.flip).any()
    if preset == "v2":
        assert p.blur.any() and (~p.blur).any() and (~p.jitter).any()
    else:
        assert p.jitter.all() and not p.blur_enabled
    for v, pk in zip(views, params):
        for i in range(n):
            ref = reference_view(img[i], pk, i, cfg)
            torch.testing.assert_close(v[i], ref, atol=1e-4, rtol=0, msg=f"{pk.kind} sample {i}")


def test_each_colour_op_alone_matches_torchvision():
    """One op at a time (the others disabled), per-sample factors."""
    n, size = 12, 24
    img = smooth_images(n, size, seed=11, dtype=torch.float32)
    for jit in [(0.6, 0, 0, 0), (0, 0.6, 0, 0), (0, 0, 0.6, 0), (0, 0, 0, 0.4)]:
        cfg = ViewConfig(size=size, jitter=jit, jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0,
                         flip_prob=0.0)
        vm = ViewMaker(cfg)
        p = vm.sample_params("original", n, size, size, gen(12))
        (v,) = vm.render(img, [p])
        op = [i for i in range(4) if jit[i] > 0][0]
        factors = [p.brightness, p.contrast, p.saturation, p.hue][op]
        assert factors.std() > 0  # per-sample factors
        fn = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue][op]
        for i in range(n):
            ref = TF.normalize(fn(img[i], factors[i].item()), cfg.mean, cfg.std)
            torch.testing.assert_close(v[i], ref, atol=1e-4, rtol=0)


def test_grayscale_and_blur_match_torchvision():
    n, size = 10, 48
    img = smooth_images(n, size, seed=13)
    cfg = ViewConfig(size=size, jitter_prob=0.0, grayscale_prob=0.5, blur_prob=1.0, flip_prob=0.0)
    k = cfg.resolved_blur_kernel_size
    assert k == blur_kernel_size(48) == 5
    vm = ViewMaker(cfg)
    p = vm.sample_params("original", n, size, size, gen(14))
    assert p.grayscale.any() and (~p.grayscale).any()
    (v,) = vm.render(img, [p])
    x = img.float() / 255
    for i in range(n):
        ref = x[i]
        if p.grayscale[i]:
            ref = TF.rgb_to_grayscale(ref, 3)
        ref = TF.gaussian_blur(ref, [k, k], [p.sigma[i].item()] * 2)
        torch.testing.assert_close(unnormalise(v[i]), ref, atol=2e-5, rtol=0)
        if p.grayscale[i]:  # gray: all three channels equal, equal to 601-2 luma
            u = unnormalise(v[i])
            torch.testing.assert_close(u[0], u[1], atol=2e-5, rtol=0)
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert LUMA == (0.2989, 0.587, 0.114)


def test_blur_kernel_size_rule():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) == 3
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(10) == 3


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------


def test_samples_differ_and_seeding_is_deterministic():
    img = smooth_images(1, 40).expand(16, 3, 40, 40).contiguous()  # identical images
    vm = ViewMaker(ViewConfig(size=32))
    a = vm(img, ["original", "crop", "crop"], gen(20))
    b = vm(img, ["original", "crop", "crop"], gen(20))
    c = vm(img, ["original", "crop", "crop"], gen(21))
    for va, vb, vc in zip(a, b, c):
        assert torch.equal(va, vb)
        assert not torch.allclose(va, vc)
        flat = va.flatten(1)
        d = torch.cdist(flat, flat)
        assert (d + torch.eye(16) * 1e9).min() > 1e-3, "two samples got identical views"
    assert not torch.allclose(a[1], a[2])  # the two crops differ
    # chunking does not change the result
    d = ViewMaker(ViewConfig(size=32), chunk_size=5)(img, ["original", "crop", "crop"], gen(20))
    for va, vd in zip(a, d):
        torch.testing.assert_close(va, vd, atol=1e-6, rtol=0)


def test_probabilities_are_honoured():
    n = 2000
    cfg = ViewConfig(size=32)
    vm = ViewMaker(cfg)
    p = vm.sample_params("crop", n, 32, 32, gen(30))

    def near(mask, prob):
        frac = mask.float().mean().item()
        assert abs(frac - prob) < 4 * math.sqrt(prob * (1 - prob) / n) + 1e-9, (frac, prob)

    near(p.grayscale, 0.2)
    near(p.flip, 0.5)
    near(p.jitter, 0.8)
    near(p.blur, 0.5)
    # every op order is used, uniformly-ish (24 permutations)
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    assert codes.unique().numel() == 24
    j = p.jitter
    assert p.brightness[j].min() >= 0.6 and p.brightness[j].max() <= 1.4
    assert p.hue[j].abs().max() <= 0.1 and p.hue[j].std() > 0.04
    assert torch.all(p.brightness[~j] == 1) and torch.all(p.hue[~j] == 0)
    # v1 preset: jitter always on, no blur, hue up to 0.4
    p1 = ViewMaker(ViewConfig(size=32, preset="v1")).sample_params("crop", n, 32, 32, gen(31))
    assert p1.jitter.all() and not p1.blur_enabled and p1.hue.abs().max() > 0.3
    near(p1.grayscale, 0.2)
    # configurable probabilities
    p2 = ViewMaker(ViewConfig(size=32, grayscale_prob=0.7, flip_prob=0.1, blur_prob=0.3)).sample_params(
        "crop", n, 32, 32, gen(32))
    near(p2.grayscale, 0.7)
    near(p2.flip, 0.1)
    near(p2.blur, 0.3)


def test_rendered_grayscale_and_flip_fractions():
    """Statistics measured on the rendered pixels, not only on the parameters."""
    n = 2000
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    img[..., :4] = torch.tensor([200, 30, 30], dtype=torch.uint8).view(3, 1, 1)  # red left half
    img = img.expand(n, 3, 8, 8).contiguous()
    vm = ViewMaker(ViewConfig(size=8, jitter_prob=0.0, blur_prob=0.0))
    (v,) = vm(img, ["original"], gen(40))
    u = unnormalise(v)
    gray = (u[:, 0] - u[:, 1]).abs().amax(dim=(1, 2)) < 1e-4
    flipped = u[:, 0, :, 0].mean(1) < u[:, 0, :, -1].mean(1)
    assert abs(gray.float().mean().item() - 0.2) < 0.04
    assert abs(flipped.float().mean().item() - 0.5) < 0.05


# ---------------------------------------------------------------------------------------------
# Shapes, dtypes, normalisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("src,out", [(32, 32), (48, 32), (20, 36)])
def test_shapes_dtypes_and_normalisation(dtype, src, out):
    img = smooth_images(5, src, seed=50, dtype=dtype)
    vm = ViewMaker(ViewConfig(size=out))
    views = vm(img, ["original", "crop", "crop"], gen(51))
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    assert len(views) == 3
    for v in views:
        assert v.shape == (5, 3, out, out) and v.dtype == expected
        assert torch.isfinite(v).all()
        u = unnormalise(v.float())
        assert u.min() >= -1e-4 and u.max() <= 1 + 1e-4
    # uint8 and float input describe the same image -> the same views (bfloat16: the input
    # itself is rounded to ~3 significant digits, and jitter factors up to 1.4 amplify that)
    img8 = smooth_images(5, src, seed=50)
    flt = (img8.double() / 255).to(dtype) if dtype != torch.uint8 else img8
    ref = vm(img8, ["original", "crop", "crop"], gen(51))
    got = vm(flt, ["original", "crop", "crop"], gen(51))
    for kind, v, r in zip(["original", "crop", "crop"], got, ref):
        err = (v.float() - r).abs()
        if dtype == torch.bfloat16:
            assert err.max() < 0.08 and err.mean() < 0.01
        elif kind == "original" and src != out and dtype != torch.uint8:
            # uint8 input is resized by torchvision's uint8 kernel (rounded to uint8): up to a
            # level of 1/255, / std (0.224), amplified by up to three jitter factors of 1.4
            # and by hue near sector edges
            assert err.max() < 0.1 and err.mean() < 0.005
        else:
            torch.testing.assert_close(v.float(), r, atol=1e-4, rtol=0)
    # normalisation: with no augmentation a constant image maps to (c - mean) / std
    const = torch.full((2, 3, src, src), 0.5, dtype=torch.float32)
    (o,) = ViewMaker(ViewConfig(size=out, **OFF))(const, ["crop"], gen(52))
    torch.testing.assert_close(o, ((0.5 - MEAN) / STD).expand(2, 3, out, out), atol=1e-5, rtol=0)


def test_channels_last_output():
    img = smooth_images(4, 40).contiguous(memory_format=torch.channels_last)
    vm = ViewMaker(ViewConfig(size=32))
    a = vm(img, ["crop"], gen(60))[0]
    b = ViewMaker(ViewConfig(size=32), channels_last=False)(img, ["crop"], gen(60))[0]
    assert a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous()
    assert b.is_contiguous()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ViewConfig(size=32, preset="v3")
    with pytest.raises(ValueError):
        ViewConfig(size=32, crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError):
        ViewConfig(size=32, blur_kernel_size=4)
    vm = ViewMaker(ViewConfig(size=32))
    with pytest.raises(ValueError):
        vm(torch.zeros(2, 3, 8, 8), ["random"], gen())
    with pytest.raises(ValueError):
        vm(torch.zeros(2, 1, 8, 8), ["crop"], gen())


def test_torchvision_reference_pipeline_has_same_parameters():
    import torchvision.transforms as T
    from PIL import Image

    cfg = ViewConfig(size=32)
    tf = torchvision_reference_pipeline(cfg, "crop")
    names = [type(t).__name__ for t in tf.transforms]
    assert names == ["RandomResizedCrop", "RandomApply", "RandomGrayscale", "RandomApply",
                     "RandomHorizontalFlip", "ToTensor", "Normalize"]
    jit = tf.transforms[1]
    assert jit.p == 0.8 and isinstance(jit.transforms[0], T.ColorJitter)
    assert jit.transforms[0].hue == (-0.1, 0.1)
    blur = tf.transforms[3]
    assert blur.p == 0.5 and blur.transforms[0].kernel_size == (3, 3)
    assert blur.transforms[0].sigma == (0.1, 2.0)
    v1 = torchvision_reference_pipeline(ViewConfig(size=32, preset="v1"), "original")
    assert [type(t).__name__ for t in v1.transforms] == [
        "Resize", "RandomGrayscale", "RandomApply", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert v1.transforms[2].p == 1.0
    pil = Image.fromarray(smooth_images(1, 40)[0].permute(1, 2, 0).numpy())
    assert tf(pil).shape == (3, 32, 32)


def test_threads_and_chunks_do_not_change_the_result():
    img = smooth_images(12, 40, seed=70)
    kinds = ["original", "crop", "crop"]
    before = torch.get_num_threads()
    ref = ViewMaker(ViewConfig(size=32), num_workers=1, chunk_size=12)(img, kinds, gen(71))
    for workers, chunk in [(2, 1), (2, 5), (3, 4), (1, 3)]:
        got = ViewMaker(ViewConfig(size=32), num_workers=workers, chunk_size=chunk)(img, kinds, gen(71))
        for r, o in zip(ref, got):
            torch.testing.assert_close(o, r, atol=1e-6, rtol=0)
    assert torch.get_num_threads() == before  # the worker threads' setting does not leak


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sync_free", [False, True])
def test_half_precision_compute(dtype, sync_free):
    """The reduced-precision code path (used on CUDA for half inputs) runs on CPU too."""
    img = smooth_images(8, 40, seed=80)
    kinds = ["original", "crop"]
    ref = ViewMaker(ViewConfig(size=32))(img, kinds, gen(81))
    got = ViewMaker(ViewConfig(size=32), compute_dtype=dtype, sync_free=sync_free)(img, kinds, gen(81))
    for r, o in zip(ref, got):
        assert o.dtype == dtype and o.shape == r.shape
        err = (o.float() - r).abs()
        # bfloat16 keeps 8 significant bits (~0.4 %), float16 11 bits
        assert err.mean() < (0.02 if dtype == torch.bfloat16 else 0.003)
        assert err.max() < (0.2 if dtype == torch.bfloat16 else 0.03)


# ---------------------------------------------------------------------------------------------
# The photometric stage alone (views cut by the loader workers: trainables.data.geometry)
# ---------------------------------------------------------------------------------------------


def test_photometric_stage_on_precut_views_is_bit_identical_to_the_full_path():
    """For views already cut to R x R, ``photometric`` runs the same code as ``__call__`` does on
    an R x R image ("original" view: no resampling), with the same per-sample parameters."""
    size = 24
    a, b = smooth_images(6, size, seed=90), smooth_images(6, size, seed=91)
    precut = torch.stack([a, b], dim=1)  # B x V x 3 x R x R, as the loader yields it
    maker = ViewMaker(ViewConfig(size=size, blur_prob=0.5, grayscale_prob=0.3))
    got = maker.photometric(precut, gen(92))
    g = gen(92)
    expected = [maker(a, ["original"], g)[0], maker(b, ["original"], g)[0]]
    assert len(got) == 2
    for o, e in zip(got, expected):
        assert torch.equal(o, e)
    # and each view matches torchvision's per-sample ops with the parameters it was given
    g = gen(92)
    params = maker.sample_params("original", 6, size, size, g)
    for i in range(6):
        ref = reference_view(a[i], params, i, maker.cfg)
        torch.testing.assert_close(got[0][i], ref, atol=2e-4, rtol=0)
    with pytest.raises(ValueError, match="B x V x 3 x 24 x 24"):
        maker.photometric(a, gen())


def test_view_config_from_train_config_and_partial_jitter():
    from trainables.config import TrainConfig

    cfg = TrainConfig.from_dict({"jitter_hue": 0.0, "jitter_prob": 0.5, "grayscale_prob": 0.0,
                                 "blur_sigma": [0.5, 1.0], "flip_prob": 0.0, "crop_scale": [0.3, 0.9]})
    vc = ViewConfig.from_train_config(cfg)
    assert vc.resolved_jitter == (0.4, 0.4, 0.4, 0.0) and vc.resolved_jitter_prob == 0.5
    assert (vc.grayscale_prob, vc.blur_sigma, vc.flip_prob, vc.crop_scale) == (0.0, (0.5, 1.0), 0.0, (0.3, 0.9))
    assert vc.size == cfg.resolved_view_size and vc.resolved_blur_prob == 0.5
    v1 = ViewConfig.from_train_config(TrainConfig.from_dict({"augmentation": "v1", "jitter_brightness": 0.1}))
    assert v1.resolved_jitter == (0.1, 0.4, 0.4, 0.4) and v1.resolved_blur_prob == 0.0
    assert ViewMaker(vc)._enabled == (True, True, True, False)  # hue 0: the op is skipped
