"""Model library: every architecture builds, runs forward and backward on 5 bands and keeps its output
contract; bricks attach, round-trip and refuse what does not fit; heatmap and contact decoding."""

from __future__ import annotations

import pickle

import pytest
import torch
from aifactory.datasets.format import Normalization
from aifactory.errors import ConfigError, InputError
from aifactory.models import ARCHITECTURES, BRICKS, TASKS, min_tile, task_of
from aifactory.models.base import load_weights, pooled_batch_norm
from aifactory.models.card import ModelCard, build_model
from aifactory.models.contact import decode_instances
from aifactory.models.heatmap import decode_heatmap, encode_targets

BANDS, CLASSES, BATCH = 5, 4, 2
#: Smaller heads and fewer proposals where the defaults are sized for real tiles (test time only).
SMALL = {
    "faster_rcnn": {"representation_size": 64, "proposals": 50, "roi_samples": 32, "detections_per_image": 10},
    "mask_rcnn": {"representation_size": 64, "proposals": 50, "roi_samples": 32, "detections_per_image": 10},
    "retinanet": {"detections_per_image": 10},
    "fcos": {"detections_per_image": 10},
    "ssdlite": {"detections_per_image": 10},
    "dpt": {"intermediate_channels": [16, 32, 64, 64], "fusion_channels": 16},
    "upernet": {"decoder_channels": 64},
    "pspnet": {"psp_out_channels": 64},
    "deeplabv3": {"decoder_channels": 64},
    "deeplabv3plus": {"decoder_channels": 64},
    "segformer": {"segmentation_channels": 64},
    "fpn": {"pyramid_channels": 64, "segmentation_channels": 32},
}


def build(name: str, **params):
    entry = ARCHITECTURES.get(name)
    return entry.func(entry.parse_params({**SMALL.get(name, {}), **params}, name), BANDS, CLASSES)


def targets(size: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for k in range(BATCH):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 4:30, 4:20] = 1
        masks[1, 30:50, 36:60] = 1
        out.append({"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0], [36.0, 30.0, 60.0, 50.0]]),
                    "labels": torch.tensor([1, 2 + k]), "masks": masks})
    return out


def test_registry_covers_every_family_with_at_least_20_architectures():
    assert len(ARCHITECTURES) >= 20
    assert {task_of(name) for name in ARCHITECTURES.names()} == set(TASKS)
    assert {"se", "scse", "cbam", "eca", "aspp", "attention_gate", "respath"} <= set(BRICKS.names())


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_architecture_forward_backward_and_output_contract(name):
    torch.manual_seed(0)
    model = build(name)
    size = max(64, min_tile(name))
    x = torch.randn(BATCH, BANDS, size, size)
    family = task_of(name)
    model.train()
    if family in ("detection", "instance"):
        losses = model(list(x), targets(size))
        assert losses and all(torch.isfinite(v) for v in losses.values())
        loss = sum(losses.values())
    else:
        out = model(x)
        if family == "segmentation":
            assert out.shape == (BATCH, CLASSES, size, size)
            loss = out.logsumexp(1).mean()
        elif family == "heatmap":
            stride = model.stride
            grid = (BATCH, size // stride, size // stride)
            assert out["heatmap"].shape == (BATCH, CLASSES, *grid[1:])
            assert out["size"].shape == out["offset"].shape == (BATCH, 2, *grid[1:])
            assert bool((out["size"] > 0).all()) and bool(((out["offset"] >= 0) & (out["offset"] <= 1)).all())
            loss = sum(v.mean() for v in out.values())
        else:
            assert family == "contact"
            assert out["semantic"].shape == (BATCH, CLASSES, size, size)
            assert out["boundary"].shape == out["contact"].shape == (BATCH, 1, size, size)
            loss = sum(v.mean() for v in out.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    if family in ("detection", "instance"):
        model.eval()
        with torch.no_grad():
            detections = model(list(x))
        assert len(detections) == BATCH
        keys = {"boxes", "labels", "scores"} | ({"masks"} if family == "instance" else set())
        assert set(detections[0]) == keys and detections[0]["boxes"].shape[1:] == (4,)


def test_bricks_attach_everywhere_and_round_trip_through_state_dict():
    bricks = [{"name": "scse", "where": "skips"}, "se", {"cbam": {"where": "bottleneck"}}, "aspp",
              "attention_gate", {"name": "respath", "max_length": 2}, {"name": "eca", "where": "decoder"}]
    plain = build("unet")
    model = build("unet", bricks=bricks)
    state = model.state_dict()
    assert len(state) > len(plain.state_dict())
    assert any(k.startswith("encoder.bricks.") for k in state) and any(k.startswith("decoder.bricks.") for k in state)
    assert any(".gate_proj." in k for k in state)
    x = torch.randn(BATCH, BANDS, 64, 64)
    model.eval()
    twin = build("unet", bricks=bricks).eval()
    twin.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
    centernet = build("centernet", bricks=["attention_gate", {"name": "se", "where": "skips"}])
    assert any(".gate_proj." in k for k in centernet.state_dict())


@pytest.mark.parametrize("name, bricks, message", [
    ("deeplabv3", ["aspp"], "already has ASPP"),
    ("pspnet", ["respath"], "has none"),
    ("fpn", ["attention_gate"], "needs a U-Net decoder"),
    ("faster_rcnn", ["se"], "accepts no bricks"),
    ("unet", ["squeeze"], "unknown brick 'squeeze'"),
    ("unet", [{"name": "se", "where": "head"}], "where"),
])
def test_incompatible_or_unknown_bricks_are_one_line_config_errors(name, bricks, message):
    with pytest.raises(ConfigError) as excinfo:
        build(name, bricks=bricks)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def brick_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".bricks." in f".{n}" or ".gate_proj." in n]


def test_dpt_takes_bricks_on_its_decoder_only_and_they_are_used():
    """DPT's ViT encoder yields (token maps, class tokens), not a feature pyramid: an encoder slot brick was
    skipped silently (bottleneck, aspp) or crashed in the forward pass (skips, respath); the decoder slot
    crashed at build time on DPT's head."""
    with pytest.raises(ConfigError, match="token maps, not a feature pyramid") as excinfo:
        build("dpt", bricks=[{"name": "eca", "where": "skips"}])
    assert "\n" not in str(excinfo.value)
    model = build("dpt", bricks=["scse", {"name": "cbam", "where": "decoder"}])
    out = model(torch.randn(BATCH, BANDS, 64, 64))
    assert out.shape == (BATCH, CLASSES, 64, 64)
    out.logsumexp(1).mean().backward()
    added = brick_parameters(model)
    assert added and all(p.grad is not None for p in added)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_brick_attached_is_used(name):
    """A skip brick on a feature the decoder never reads (DeepLab v3+, FPN, PAN, UPerNet skip some) had
    weights that never trained; each architecture that takes skip bricks now gets them only where they run."""
    try:
        model = build(name, bricks=[{"name": "se", "where": "skips"}, {"name": "eca", "where": "bottleneck"}])
    except ConfigError:  # no skips (pspnet, deeplabv3), a ViT encoder (dpt), a detector: refused elsewhere
        return
    size = max(64, min_tile(name))
    out = model(torch.randn(BATCH, BANDS, size, size))
    outputs = out.values() if isinstance(out, dict) else [out]
    sum(o.float().mean() for o in outputs).backward()
    added = brick_parameters(model)
    assert added and all(p.grad is not None for p in added), \
        [n for n, p in model.named_parameters() if ".bricks." in f".{n}" and p.grad is None]


def test_a_run_saved_with_bricks_that_never_ran_still_loads(tmp_path):
    """Runs made before skip bricks went only where the decoder reads hold the dead bricks' weights."""
    bricks = [{"name": "se", "where": "skips"}]
    model = build("deeplabv3plus", bricks=bricks)
    state = model.state_dict()
    dead = {f"encoder.bricks.1.0.{k}": v.clone() for k, v in model.encoder.bricks["2"][0].state_dict().items()}
    torch.save({**state, **dead}, tmp_path / "model.pt")
    twin = build("deeplabv3plus", bricks=bricks)
    assert load_weights(twin, tmp_path / "model.pt") == []
    torch.save({**state, "decoder.extra.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="1 unexpected or mis-shaped"):  # anything else still refused
        load_weights(twin, tmp_path / "other.pt")


def test_batch_norm_after_global_pooling_is_found_where_a_batch_of_one_fails():
    """What the trainer refuses batch_size 1 for (test_training: batch_size 1)."""
    deeplab = build("deeplabv3")
    assert pooled_batch_norm(deeplab) == "decoder.aspp.convs.4"
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        deeplab.train()(torch.randn(1, BANDS, 64, 64))
    assert pooled_batch_norm(build("unet", bricks=["aspp"])) is not None
    pspnet = build("pspnet")  # its 1×1 bin has no batch norm
    assert pooled_batch_norm(pspnet) is None and pooled_batch_norm(build("lraspp")) is None
    pspnet.train()(torch.randn(1, BANDS, 64, 64))


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="encoder 'resnet-nine'"):
        build("unet", encoder="resnet-nine")


def test_local_weights_load_only_matching_tensors_and_never_run_code(tmp_path):
    source = build("unet")
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    target = build("unet")
    assert load_weights(target, path, strict=True) == []
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                    strict=True))
    other_classes = ARCHITECTURES.get("unet").func(ARCHITECTURES.get("unet").parse_params({}, "x"), BANDS, 7)
    skipped = load_weights(other_classes, path, strict=False)  # the head differs, the rest loads
    assert skipped and all("segmentation_head" in k for k in skipped)
    with pytest.raises(InputError, match="do not match"):
        load_weights(other_classes, path, strict=True)
    with pytest.raises(InputError, match="share no tensor"):
        load_weights(build("retinanet"), path)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(ValueError("not a tensor"), protocol=2))
    with pytest.raises(InputError, match="cannot load weights"):
        load_weights(target, evil)


def test_heatmap_targets_decode_back_to_the_boxes():
    boxes = [torch.tensor([[10.0, 12.0, 30.0, 22.0], [40.5, 40.0, 47.5, 52.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 3]), torch.zeros(0, dtype=torch.int64)]
    for stride in (1, 2):
        t = encode_targets(boxes, labels, CLASSES, (64, 64), stride)
        assert t["heatmap"].shape == (2, CLASSES, 64 // stride, 64 // stride) and int(t["centers"].sum()) == 2
        assert float(t["heatmap"][:, 0].max()) == 0.0 and float(t["heatmap"].max()) == 1.0
        # a perfect model: logits ±10 where the target is a centre or not, size/offset where it says
        logits = torch.where(t["heatmap"] == 1, 10.0, -10.0)
        out = {"heatmap": logits, "size": t["size"].clamp_min(1), "offset": t["offset"]}
        decoded = decode_heatmap(out, stride, score_threshold=0.5)
        assert len(decoded[1]["boxes"]) == 0
        order = torch.argsort(decoded[0]["labels"])
        assert decoded[0]["labels"][order].tolist() == [1, 3]
        assert torch.allclose(decoded[0]["boxes"][order], boxes[0], atol=1e-3)


def test_contact_decoding_splits_touching_objects():
    semantic = torch.full((1, 2, 32, 32), -5.0)
    semantic[0, 1, 8:24, 4:28] = 5.0  # two touching buildings: one foreground blob
    semantic[0, 0] = -semantic[0, 1]
    boundary = torch.full((1, 1, 32, 32), -5.0)
    contact = torch.full((1, 1, 32, 32), -5.0)
    contact[0, 0, 8:24, 15:17] = 5.0  # where they touch
    ids = decode_instances({"semantic": semantic, "boundary": boundary, "contact": contact})
    assert set(ids[0, 8:24, 4:28].ravel().tolist()) == {1, 2} and ids[0, 0, 0] == 0


def test_card_rebuilds_every_family(tmp_path):
    for name in ("centernet", "contact_unet", "fcos"):
        entry = ARCHITECTURES.get(name)
        params = entry.parse_params(SMALL.get(name, {}), name).model_dump(mode="json")
        card = ModelCard(architecture=name, params=params, task=task_of(name), in_channels=BANDS,
                         num_classes=CLASSES, classes=["background", "a", "b", "c"], bands=[1, 2, 3, 4, 5],
                         normalization=Normalization(mean=[0.0] * BANDS, std=[1.0] * BANDS), tile_size=64)
        assert isinstance(build_model(card), torch.nn.Module)


def test_models_list_cli_prints_every_architecture_and_brick(cli):
    result = cli("models", "--list")
    assert result.returncode == 0, result.stderr
    for name in [*ARCHITECTURES.names(), *BRICKS.names()]:
        assert f" {name}  " in result.stdout
    assert "[heatmap] centernet" in result.stdout and "stride=2" in result.stdout


def test_shallow_encoders_keep_the_output_at_input_size():
    x = torch.randn(1, BANDS, 64, 64)
    for name in ARCHITECTURES.names():
        entry = ARCHITECTURES.get(name)
        if "encoder_depth" not in entry.params.model_fields or task_of(name) != "segmentation":
            continue
        model = build(name, encoder_depth=3).eval()
        with torch.no_grad():
            assert model(x).shape == (1, CLASSES, 64, 64), name
