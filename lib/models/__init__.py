"""Networks: the :class:`MultiTaskModel` contract, :class:`SceneNet`, structural helpers."""
from .contract import (MODEL_REGISTRY, PRUNABLE_TYPES, MultiTaskModel, build_model, check_model,
                       check_selection, layer_owner, model_name, prunable_layers, register_model,
                       shared_layers, task_layers, task_model_layers)
from .scene_net import (ASPP_RATES, BACKBONE_LAYOUTS, BasicBlock, ClassificationModule,
                        DeepLabResNetBackbone, SceneNet, head_branch_names)
from .structure import (backbone_modules, backbone_parameters, check_scene_net, head_modules,
                        head_parameters, prunable_modules, task_model_modules)

__all__ = ["MODEL_REGISTRY", "PRUNABLE_TYPES", "MultiTaskModel", "build_model", "check_model",
           "check_selection", "layer_owner", "model_name", "prunable_layers", "register_model",
           "shared_layers", "task_layers", "task_model_layers",
           "ASPP_RATES", "BACKBONE_LAYOUTS", "BasicBlock", "ClassificationModule",
           "DeepLabResNetBackbone", "SceneNet", "head_branch_names",
           "backbone_modules", "backbone_parameters", "check_scene_net", "head_modules",
           "head_parameters", "prunable_modules", "task_model_modules"]
