"""On/off config keys given on the command line.

``python -m monai.bundle run ... --key false`` hands the config the STRING ``"false"`` (Python
Fire parses only ``False``), which plain ``if @key`` would take as on. Configs read their flags
through :func:`as_flag`, so ``false``/``False``/``0``/``no`` all mean off.
"""

from __future__ import annotations

_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def as_flag(value: bool | int | str, name: str = "flag") -> bool:
    """``value`` as a bool: bools, 0/1 and the words true/false, yes/no, on/off (any case); else ValueError naming ``name``."""
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in _WORDS:
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return _WORDS[key]
