"""Networks: the :class:`MultiTaskModel` contract and its registry, :class:`SceneNet`, channel
specs of structurally pruned networks, SceneNet's head-id helpers."""
from .channels import apply_channel_spec, build_structured, changed_channels, channel_spec
from .contract import (MODEL_REGISTRY, PRUNABLE_TYPES, MultiTaskModel, architecture_of,
                       build_model, check_model, check_selection, copy_network, layer_owner,
                       model_from_config, model_name, prunable_layers, register_model,
                       shared_layers, task_layers, task_model_layers)
from .scene_net import (ASPP_RATES, BACKBONE_LAYOUTS, BasicBlock, ClassificationModule,
                        DeepLabResNetBackbone, SceneNet, head_branch_names)
from .structure import (backbone_modules, backbone_parameters, check_scene_net, head_modules,
                        head_parameters, prunable_modules, task_model_modules)

__all__ = ["MODEL_REGISTRY", "PRUNABLE_TYPES", "MultiTaskModel", "architecture_of",
           "build_model", "check_model", "check_selection", "copy_network", "layer_owner",
           "model_from_config", "model_name", "prunable_layers", "register_model",
           "shared_layers", "task_layers", "task_model_layers",
           "apply_channel_spec", "build_structured", "changed_channels", "channel_spec",
           "ASPP_RATES", "BACKBONE_LAYOUTS", "BasicBlock", "ClassificationModule",
           "DeepLabResNetBackbone", "SceneNet", "head_branch_names",
           "backbone_modules", "backbone_parameters", "check_scene_net", "head_modules",
           "head_parameters", "prunable_modules", "task_model_modules"]
