"""Networks: :class:`SceneNet` and structural helpers."""
from .scene_net import (ASPP_RATES, BACKBONE_LAYOUTS, BasicBlock, ClassificationModule,
                        DeepLabResNetBackbone, SceneNet, head_branch_names)
from .structure import (PRUNABLE_TYPES, backbone_modules, backbone_parameters, check_scene_net,
                        head_modules, head_parameters, prunable_modules, task_model_modules)

__all__ = ["ASPP_RATES", "BACKBONE_LAYOUTS", "BasicBlock", "ClassificationModule",
           "DeepLabResNetBackbone", "SceneNet", "head_branch_names", "PRUNABLE_TYPES",
           "backbone_modules", "backbone_parameters", "check_scene_net", "head_modules",
           "head_parameters", "prunable_modules", "task_model_modules"]
