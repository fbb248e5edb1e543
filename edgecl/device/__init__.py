"""The device runtime: a frozen ONNX encoder and numpy heads, with no torch.

>>> import sys, edgecl.device
>>> "torch" in sys.modules
False
"""

from __future__ import annotations

from edgecl.device._prediction import Prediction
from edgecl.device._runtime import DeviceRuntime, softmax
from edgecl.device._state import ModelState
from edgecl.device._validate import InputValidator

__all__ = ["DeviceRuntime", "InputValidator", "ModelState", "Prediction", "softmax"]
