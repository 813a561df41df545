"""The BentoML detection service (`service.py`); `bentoml serve service:Detector` finds it here."""

from service.service import Detector

__all__ = ["Detector"]
