"""Hardware models: tiers, links, GPUs, model shapes and execution-time models."""

from hwmodels.execution import ExecutionModel
from hwmodels.gpus import GPUS, GpuSpec, get_gpu
from hwmodels.models import MODELS, ModelSpec, get_model
from hwmodels.profile import COPY_KINDS, DatasheetProfile, GpuProfile, load_profile

__all__ = [
    "COPY_KINDS",
    "GPUS",
    "MODELS",
    "DatasheetProfile",
    "ExecutionModel",
    "GpuProfile",
    "GpuSpec",
    "ModelSpec",
    "get_gpu",
    "get_model",
    "load_profile",
]
