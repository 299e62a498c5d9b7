"""Hand-off to the serving stack: each integration is one module with the same interface.

``hand_off(api_client, target, handoff) -> common.Result`` (blocking; the operator runs it in a thread) keeps
the integration's target pointing at the TaskAdapter's ``status.served`` and says how the target stands;
its pure ``decide(current, target, handoff)`` says what the target should become. A new integration is a
module here, its target model in ``models/serving.py`` and one line in ``INTEGRATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relora_operator.serving import aibrix, configmap, kserve
from relora_operator.serving.common import HandOff, Result

# spec.serving field (Python name) -> the integration's hand_off.
INTEGRATIONS: dict[str, Callable[[Any, Any, HandOff], Result]] = {
    "aibrix": aibrix.hand_off,
    "kserve": kserve.hand_off,
    "config_map": configmap.hand_off,
}

__all__ = ["INTEGRATIONS", "HandOff", "Result"]
