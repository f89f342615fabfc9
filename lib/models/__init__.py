"""Networks: the :class:`MultiTaskModel` contract, the registered model families, helpers.

    SceneNet             dilated ResNet-18/34/50/101/152 + one 4-branch ASPP head per task (CUT)
    SegNetMTAN           SegNet + one MTAN attention network per task (min-max, NYUv2)
    SplitDeepLabv3       dilated ResNet-50 + one DeepLabv3 head per task (min-max, NYUv2)
    MTANDeepLabv3        the same with per-task attention over each stage (min-max, NYUv2)
    MultiDomainVGG16     VGG-16, per-domain BatchNorm and 5-way heads (min-max, CIFAR-100)

Also: channel specs of structurally pruned networks (:mod:`.channels`), SceneNet's head-id
helpers (:mod:`.structure`).
"""
from .channels import (apply_channel_spec, build_structured, build_without_weights,
                       changed_channels, channel_spec)
from .contract import (MODEL_REGISTRY, PRUNABLE_TYPES, MultiTaskModel, TaskOutputs,
                       architecture_of, build_model, check_model, check_selection, copy_network,
                       layer_owner, model_from_config, model_name, prunable_layers,
                       register_model, shared_layers, task_layers, task_model_layers,
                       task_outputs)
from .common import NORMAL_TASKS
from .deeplab import MTANDeepLabv3, SplitDeepLabv3
from .scene_net import (ASPP_RATES, BACKBONE_BLOCKS, BACKBONE_LAYOUTS, BasicBlock, Bottleneck,
                        ClassificationModule, DeepLabResNetBackbone, SceneNet, head_branch_names)
from .segnet_mtan import SegNetMTAN
from .vgg_mtl import MultiDomainVGG16
from .structure import (backbone_modules, backbone_parameters, check_scene_net, head_modules,
                        head_parameters, prunable_modules, task_model_modules)

__all__ = ["MODEL_REGISTRY", "PRUNABLE_TYPES", "MultiTaskModel", "TaskOutputs", "task_outputs",
           "architecture_of",
           "build_model", "check_model", "check_selection", "copy_network", "layer_owner",
           "model_from_config", "model_name", "prunable_layers", "register_model",
           "shared_layers", "task_layers", "task_model_layers",
           "apply_channel_spec", "build_structured", "build_without_weights",
           "changed_channels", "channel_spec",
           "ASPP_RATES", "BACKBONE_BLOCKS", "BACKBONE_LAYOUTS", "BasicBlock", "Bottleneck",
           "ClassificationModule", "DeepLabResNetBackbone", "SceneNet", "head_branch_names",
           "NORMAL_TASKS", "SegNetMTAN", "SplitDeepLabv3", "MTANDeepLabv3", "MultiDomainVGG16",
           "backbone_modules", "backbone_parameters", "check_scene_net", "head_modules",
           "head_parameters", "prunable_modules", "task_model_modules"]
