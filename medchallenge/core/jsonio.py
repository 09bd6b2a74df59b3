"""Strict JSON: what every ``--json``, metrics.json and config.json holds.

Undefined scores are ``null``: bare ``NaN`` is not JSON and many parsers (jq, JavaScript, Go)
reject it. This module imports neither numpy nor pandas, so CLI modules can use it at import time.
"""

from __future__ import annotations

import json
import math
from typing import Any


def strict_json(obj: Any) -> Any:
    """``obj`` made strict-JSON-safe: NaN and ±inf become None, numpy scalars/arrays plain values.

    Paths and other unknown objects become their ``str``.
    """
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar, torch-free
        return strict_json(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see :func:`strict_json`)."""
    return json.dumps(strict_json(obj), indent=indent, allow_nan=False)
