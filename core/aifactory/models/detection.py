"""Object detection and instance segmentation on torchvision: Faster R-CNN, RetinaNet, FCOS, SSDlite,
Mask R-CNN. Output contract in :mod:`aifactory.models` (``detection``, ``instance``).

Adapted to imagery rather than photographs:

- any band count: the backbone's first convolution reads ``in_channels`` bands;
- no resizing: :class:`FixedScaleTransform` keeps images at their size (the GSD is part of what the model
  learns) and leaves normalisation to the data pipeline (identity mean/std, one per band); images are
  only padded to a multiple of 32 for batching;
- trainable batch norm everywhere: the backbones start from random weights (``weights=None,
  weights_backbone=None``), so torchvision's frozen batch norm (made for pretrained backbones) would
  leave them unnormalised;
- small default anchors (16 px at the finest level) for small objects.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from aifactory.models import ARCHITECTURES
from aifactory.models.base import ArchParams, adapt_input, no_bricks


class FixedScaleTransform(GeneralizedRCNNTransform):
    """Batches images (padding to ``size_divisible``) without resizing or normalising them."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        return image, target


def fixed_scale_transform(in_channels: int, size_divisible: int = 32) -> FixedScaleTransform:
    return FixedScaleTransform(min_size=1, max_size=1, image_mean=[0.0] * in_channels,
                               image_std=[1.0] * in_channels, size_divisible=size_divisible)


class DetectorParams(ArchParams):
    """Parameters shared by the FPN detectors."""

    TASK: ClassVar[str] = "detection"
    MIN_TILE: ClassVar[int] = 64

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet18"
    anchor_sizes: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256], min_length=5, max_length=5,
                                    description="anchor side in pixels per pyramid level, finest first")
    aspect_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    score_threshold: float = Field(default=0.01, ge=0, le=1, description="keep detections down to this score")
    nms_threshold: float = Field(default=0.5, gt=0, le=1)
    detections_per_image: int = Field(default=300, ge=1)


def fpn_backbone(params: DetectorParams, in_channels: int, returned_layers: list[int] | None = None,
                 extra_blocks: Any = None) -> BackboneWithFPN:
    backbone = resnet_fpn_backbone(backbone_name=params.backbone, weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5, returned_layers=returned_layers, extra_blocks=extra_blocks)
    adapt_input(backbone, "body.conv1", in_channels)
    return backbone


class RcnnParams(DetectorParams):
    """Two-stage detector: RPN proposals, then RoI classification and box refinement."""

    proposals: int = Field(default=1000, ge=10, description="RPN proposals kept after NMS per image")
    roi_samples: int = Field(default=256, ge=8, description="RoIs sampled per image for the box head loss")
    representation_size: int = Field(default=1024, ge=16, description="width of the box head MLP")


def rcnn_kwargs(params: RcnnParams, backbone: BackboneWithFPN, in_channels: int, num_classes: int) -> dict[str, Any]:
    anchors = AnchorGenerator(tuple((s,) for s in params.anchor_sizes),
                              (tuple(params.aspect_ratios),) * len(params.anchor_sizes))
    resolution = 7
    head = TwoMLPHead(backbone.out_channels * resolution**2, params.representation_size)
    return dict(rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=2 * params.proposals,
                rpn_pre_nms_top_n_test=params.proposals, rpn_post_nms_top_n_train=params.proposals,
                rpn_post_nms_top_n_test=params.proposals, box_batch_size_per_image=params.roi_samples,
                box_head=head, box_predictor=FastRCNNPredictor(params.representation_size, num_classes),
                box_score_thresh=params.score_threshold, box_nms_thresh=params.nms_threshold,
                box_detections_per_img=params.detections_per_image, min_size=1, max_size=1)


def _fix_transform(model: nn.Module, in_channels: int) -> nn.Module:
    model.transform = fixed_scale_transform(in_channels)
    return model


@ARCHITECTURES.register("faster_rcnn", RcnnParams)
def faster_rcnn(params: RcnnParams, in_channels: int, num_classes: int) -> nn.Module:
    """Faster R-CNN (Ren 2015) with a ResNet-FPN backbone: the accurate two-stage box detector."""
    no_bricks(params, "faster_rcnn")
    backbone = fpn_backbone(params, in_channels)
    model = FasterRCNN(backbone, None, **rcnn_kwargs(params, backbone, in_channels, num_classes))
    return _fix_transform(model, in_channels)


class MaskRcnnParams(RcnnParams):
    """Mask R-CNN: Faster R-CNN plus a per-instance mask head."""

    TASK: ClassVar[str] = "instance"


@ARCHITECTURES.register("mask_rcnn", MaskRcnnParams)
def mask_rcnn(params: MaskRcnnParams, in_channels: int, num_classes: int) -> nn.Module:
    """Mask R-CNN (He 2017) with a ResNet-FPN backbone: boxes plus a 28×28 mask per instance."""
    no_bricks(params, "mask_rcnn")
    backbone = fpn_backbone(params, in_channels)
    model = MaskRCNN(backbone, None, mask_predictor=MaskRCNNPredictor(256, 256, num_classes),
                     **rcnn_kwargs(params, backbone, in_channels, num_classes))
    return _fix_transform(model, in_channels)


def _one_stage_anchors(params: DetectorParams, scales: tuple[float, ...]) -> AnchorGenerator:
    sizes = tuple(tuple(int(s * k) for k in scales) for s in params.anchor_sizes)
    return AnchorGenerator(sizes, (tuple(params.aspect_ratios),) * len(sizes))


@ARCHITECTURES.register("retinanet", DetectorParams)
def retinanet(params: DetectorParams, in_channels: int, num_classes: int) -> nn.Module:
    """RetinaNet (Lin 2017): one-stage anchors on P3–P7 with focal loss; dense scenes, many classes."""
    no_bricks(params, "retinanet")
    backbone = fpn_backbone(params, in_channels, [2, 3, 4], LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, num_classes, anchor_generator=_one_stage_anchors(params, (1.0, 2 ** (1 / 3),
                                                                                         2 ** (2 / 3))),
                      score_thresh=params.score_threshold, nms_thresh=params.nms_threshold,
                      detections_per_img=params.detections_per_image, min_size=1, max_size=1)
    return _fix_transform(model, in_channels)


class FcosParams(DetectorParams):
    """FCOS is anchor-free: ``anchor_sizes`` are the regression scales per level (the strides)."""

    anchor_sizes: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128], min_length=5, max_length=5)
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=1)
    center_sampling_radius: float = Field(default=1.5, gt=0)


@ARCHITECTURES.register("fcos", FcosParams)
def fcos(params: FcosParams, in_channels: int, num_classes: int) -> nn.Module:
    """FCOS (Tian 2019): anchor-free one-stage detector, per-pixel box distances and centre-ness."""
    no_bricks(params, "fcos")
    backbone = fpn_backbone(params, in_channels, [2, 3, 4], LastLevelP6P7(256, 256))
    model = FCOS(backbone, num_classes, anchor_generator=_one_stage_anchors(params, (1.0,)),
                 center_sampling_radius=params.center_sampling_radius, score_thresh=params.score_threshold,
                 nms_thresh=params.nms_threshold, detections_per_img=params.detections_per_image,
                 min_size=1, max_size=1)
    return _fix_transform(model, in_channels)


class SsdParams(ArchParams):
    """SSDlite: relative default boxes on six MobileNetV3 feature maps (tiles ≥ 128)."""

    TASK: ClassVar[str] = "detection"
    MIN_TILE: ClassVar[int] = 128
    score_threshold: float = Field(default=0.01, ge=0, le=1)
    nms_threshold: float = Field(default=0.55, gt=0, le=1)
    detections_per_image: int = Field(default=300, ge=1)


@ARCHITECTURES.register("ssdlite", SsdParams)
def ssdlite(params: SsdParams, in_channels: int, num_classes: int) -> nn.Module:
    """SSDlite on MobileNetV3-Large (Howard 2019): the lightest detector here, for CPU and edge."""
    no_bricks(params, "ssdlite")
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                          score_thresh=params.score_threshold, nms_thresh=params.nms_threshold,
                                          detections_per_img=params.detections_per_image,
                                          topk_candidates=max(300, params.detections_per_image))
    adapt_input(model, "backbone.features.0.0.0", in_channels)
    return _fix_transform(model, in_channels)
