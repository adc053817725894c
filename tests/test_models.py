"""Encoders: ResNet-18 (torchvision) and Conformer (torchaudio) behave as the paper defines them."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from mmbal.cli import main
from mmbal.models import ENCODERS, build_model
from mmbal.models.conformer import ConformerEncoder, SpectrogramFrames
from mmbal.models.resnet import ResNet18
from mmbal.models.small_cnn import MaxPool2x2

TINY_RESNET = {"layers": (1, 1, 1, 1)}
TINY_CONFORMER = {"d_model": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64, "kernel_size": 5,
                  "frame_width": 4, "frame_dim": 8}


def test_resnet_audio_is_torchvision_resnet18_with_global_average_pool():
    torch.manual_seed(0)
    enc = ResNet18("audio", (1, 40, 40)).eval()
    ref = resnet18(weights=None)
    ref.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    ref.fc = nn.Identity()
    for mine, theirs in zip(enc.trunk.children(), list(ref.children())[:8]):
        theirs.load_state_dict(mine.state_dict())
    ref.eval()
    x = torch.randn(2, 1, 40, 40)
    tokens = enc(x)
    assert tokens.shape == (2, 2 * 2, 512)                     # 40 -> 20 -> 10 -> 5 -> 3 -> 2 per axis
    torch.testing.assert_close(tokens.mean(1), ref(x))
    assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for p in ref.parameters())


def test_resnet_video_token_mean_is_3d_average_pool_over_frames():
    torch.manual_seed(0)
    enc = ResNet18("video", (3, 3, 32, 64), **TINY_RESNET).eval()
    x = torch.randn(2, 3, 3, 32, 64)
    tokens = enc(x)
    assert tokens.shape == (2, 3 * 1 * 2, 512)                 # T x H/32 x W/32 cells
    maps = torch.stack([enc.trunk(x[:, :, t]) for t in range(3)], dim=2)     # (B, 512, T, H', W')
    torch.testing.assert_close(tokens.mean(1), F.adaptive_avg_pool3d(maps, 1).flatten(1))
    # frames are independent until pooling: changing frame 2 leaves frame 0's tokens unchanged
    y = x.clone()
    y[:, :, 2] += 1.0
    changed = enc(y)
    torch.testing.assert_close(changed[:, :4], tokens[:, :4])
    assert not torch.allclose(changed[:, 4:], tokens[:, 4:])


def test_resnet_loads_local_imagenet_weights_into_a_one_channel_stem(tmp_path):
    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(ref.state_dict(), path)
    enc = ResNet18("audio", (1, 32, 32), pretrained_weights=str(path))
    conv1, layer4 = enc.trunk[0], enc.trunk[7]
    torch.testing.assert_close(conv1.weight, ref.conv1.weight.mean(1, keepdim=True))
    torch.testing.assert_close(layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ResNet18("audio", (1, 32, 32), pretrained_weights=str(tmp_path / "missing.pt"))


def test_conformer_defaults_are_the_papers_configuration():
    enc = ConformerEncoder("audio", (1, 257, 188))
    layers = enc.conformer.conformer_layers
    block = layers[0]
    assert (len(layers), enc.out_dim, enc.in_dim) == (5, 512, 257)
    assert block.self_attn.num_heads == 8 and block.self_attn.embed_dim == 512
    assert block.ffn1.sequential[1].out_features == 2048
    assert block.conv_module.sequential[2].kernel_size == (31,)
    assert block.self_attn.dropout == pytest.approx(0.1)
    assert enc.proj[0].out_features == 50                       # the paper's 50-d bottleneck


def test_conformer_attends_over_time_within_each_sample_only():
    torch.manual_seed(0)
    enc = ConformerEncoder("audio", (1, 16, 12), **TINY_CONFORMER).eval()
    x = torch.randn(4, 1, 16, 12)
    out = enc(x)
    assert out.shape == (4, 12, 32)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(enc(x[perm]), out[perm])        # batch permutation commutes
    y = x.clone()
    y[1, :, :, 3] = torch.randn(1, 16)                          # change one time frame of sample 1
    out_y = enc(y)
    changed = (out_y - out).abs().amax(dim=(1, 2))              # (B,)
    assert changed[1] > 1e-3
    torch.testing.assert_close(changed[[0, 2, 3]], torch.zeros(3))
    # ... and the change reaches the other time steps of sample 1 (attention mixes along time)
    assert (out_y[1, 10] - out[1, 10]).abs().max() > 1e-4


def test_conformer_reads_precomputed_wav2vec2_and_face_features():
    torch.manual_seed(0)
    audio = ENCODERS.create("conformer", modality="audio", input_shape=(None, 1024), **TINY_CONFORMER)
    faces = ENCODERS.create("conformer", modality="video", input_shape=(None, 1408), **TINY_CONFORMER)
    assert audio(torch.randn(2, 49, 1024)).shape == (2, 49, 32)       # any number of frames
    assert audio(torch.randn(2, 7, 1024)).shape == (2, 7, 32)
    assert faces(torch.randn(2, 30, 1408)).shape == (2, 30, 32)
    with pytest.raises(ValueError, match=r"\(B, \*, 1024\)"):
        audio(torch.randn(2, 7, 768))


def test_conformer_custom_frontend_and_video_frames():
    torch.manual_seed(0)
    frontend = nn.Sequential(SpectrogramFrames(), nn.Linear(16, 24))   # stand-in for a feature model
    enc = ConformerEncoder("audio", (1, 16, None), frontend=frontend, frontend_dim=24, **TINY_CONFORMER)
    assert enc(torch.randn(3, 1, 16, 9)).shape == (3, 9, 32)
    with pytest.raises(ValueError, match="frontend_dim"):
        ConformerEncoder("audio", (1, 16, None), frontend=frontend)
    video = ConformerEncoder("video", (1, 3, 16, 16), **TINY_CONFORMER)
    assert video(torch.randn(2, 1, 3, 16, 16)).shape == (2, 3, 32)    # one token per frame
    with pytest.raises(ValueError, match="input_kind"):
        ConformerEncoder("video", (1, 3, 16, 16), input_kind="spectrogram")


@pytest.mark.parametrize("family,options", [("small_cnn", {}), ("resnet18", TINY_RESNET),
                                            ("conformer", TINY_CONFORMER)])
def test_wrong_input_shapes_name_the_expected_shape(family, options):
    audio = ENCODERS.create(family, modality="audio", input_shape=(1, 16, 12), **options)
    video = ENCODERS.create(family, modality="video", input_shape=(1, 3, 16, 16), **options)
    expected_audio = r"\(B, 1, 16, \*\)" if family == "conformer" else r"\(B, 1, \*, \*\)"
    with pytest.raises(ValueError, match=expected_audio):
        audio(torch.randn(2, 3, 16, 12))                        # 3 channels instead of 1
    with pytest.raises(ValueError, match=r"\(B, 1, \*, \*, \*\)"):
        video(torch.randn(2, 1, 16, 16))                        # a single image, no time axis
    with pytest.raises(ValueError, match=family):
        ENCODERS.create(family, modality="audio", input_shape=(16,), **options)
    flow = ENCODERS.create(family, modality="flow", input_shape=(1, 16, 12), **options)
    with pytest.raises(ValueError, match="for 'flow'"):           # the message names the modality encoded
        flow(torch.randn(2, 2, 16, 12))


def test_unknown_model_options_are_value_errors_naming_the_component():
    shapes = {"audio": (1, 16, 12), "video": (1, 3, 16, 16)}
    with pytest.raises(ValueError, match="encoder 'resnet18'.*depth"):
        build_model(input_shapes=shapes, num_classes=3, encoder="resnet18", encoder_options={"depth": 3})
    with pytest.raises(ValueError, match="fusion 'gated'.*heads"):
        build_model(input_shapes=shapes, num_classes=3, fusion="gated", fusion_options={"heads": 2})
    with pytest.raises(ValueError, match="norm must be one of"):
        build_model(input_shapes=shapes, num_classes=3, encoder="resnet18",
                    encoder_options={"norm": "layer"})


def test_cli_lists_and_trains_a_non_default_encoder_and_fusion(capsys, tmp_path):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("resnet18", "conformer", "sum", "mlp", "film", "gated", "transformer"):
        assert f"  {name} " in listed
    out = tmp_path / "run.json"
    code = main(["train", "--dataset", "synthetic_av", "--data-opt", "sizes=[96,48,48]",
                 "--encoder", "conformer", "--fusion", "film", "--balancer", "mlb",
                 "--encoder-opt", "d_model=32", "--encoder-opt", "num_layers=1",
                 "--encoder-opt", "num_heads=4", "--encoder-opt", "ffn_dim=64",
                 "--encoder-opt", "kernel_size=5", "--fusion-opt", "conditioner=video",
                 "--epochs", "1", "--batch-size", "32", "--no-progress", "--out", str(out)])
    assert code == 0
    import json
    record = json.loads(out.read_text())
    assert record["config"]["model"]["encoder"] == "conformer"
    assert record["config"]["model"]["fusion_options"] == {"conditioner": "video"}
    assert 0.0 <= record["test"]["mm"]["accuracy"] <= 1.0 and len(record["trace"]["coeff/audio"]) == 3


@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (2, 8, 64, 30), (2, 5, 17, 15), (1, 2, 3, 2)])
def test_small_cnn_pool_matches_pytorchs_max_pool_with_and_without_autograd(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape).relu()                       # ReLU outputs: many tied zeros in a window
    x[0, 0, 0, 0] = float("nan")
    pool = MaxPool2x2()
    with torch.no_grad():
        fast = pool(x)                                   # the strided-maximum path
    kernel = F.max_pool2d(x, 2)
    assert fast.shape == kernel.shape == (*shape[:2], shape[2] // 2, shape[3] // 2)
    assert torch.isnan(fast[0, 0, 0, 0]) and torch.isnan(kernel[0, 0, 0, 0])        # NaN propagates in both
    assert torch.equal(fast.nan_to_num(-1.0), kernel.nan_to_num(-1.0))               # and every value is the same
    leaf = x.nan_to_num().requires_grad_()
    weights = torch.arange(fast.numel(), dtype=torch.float32).view_as(fast)
    (pool(leaf) * weights).sum().backward()              # the kernel: each window's gradient to its first maximum
    reference = leaf.detach().clone().requires_grad_()
    (F.max_pool2d(reference, 2) * weights).sum().backward()
    assert torch.equal(leaf.grad, reference.grad)
    assert (leaf.grad != 0).sum() == fast.numel() - (weights == 0).sum()


def test_small_cnn_evaluation_equals_the_max_pool_kernels():
    torch.manual_seed(0)
    model = build_model(input_shapes={"audio": (1, 64, 30), "video": (3, 4, 16, 16)}, num_classes=10).eval()
    batch = {"audio": torch.randn(4, 1, 64, 30), "video": torch.randn(4, 3, 4, 16, 16)}
    with torch.no_grad():
        ours = model(batch)["logits"]
        with mock.patch.object(MaxPool2x2, "forward", lambda self, x: F.max_pool2d(x, 2)):
            kernel = model(batch)["logits"]
    assert set(ours) == {"mm", "audio", "video"}
    assert all(torch.equal(ours[head], kernel[head]) for head in ours)
