"""L-inf attacks on a detector's loss, in pure PyTorch (no mmcv/mmdet needed).

``build_attack("difgsm", loss_fn, eps=8, alpha=2, steps=5)`` gives a callable ``x0 -> x_adv``
on float pixels in [0, 255]; :func:`to_uint8` rounds the result so the budget holds on disk.
See :mod:`ikd_cli.attack.methods.base` for the conventions shared by every method.
"""

from __future__ import annotations

import inspect

from ikd_cli.config.schema import AttackMethod, pixel_options
from ikd_cli.core.errors import IkdError
from .base import Attack, BoxAffine, input_diversity, l1_normalise, to_uint8
from .gradient_sign import FGSM, PGD
from .momentum import DIFGSM, MDIFGSM, MIFGSM
from .tifgsm import TIFGSM, gaussian_kernel
from .vmifgsm import VMIFGSM

# One class per ``attack.method`` choice, in the schema's order (the choices ``--method`` lists);
# each class says its own name, so a choice without a class fails here, on import.
_CLASSES = {cls.name: cls for cls in (DIFGSM, MIFGSM, TIFGSM, VMIFGSM, MDIFGSM, PGD, FGSM)}
ATTACKS = {method.value: _CLASSES[method.value] for method in AttackMethod}

# Option spellings other code uses for a method's argument (presets write ``n`` for VMI's N, as
# YAML keys and command-line options are lower case).
_ALIASES = {"n": "N"}


def build_attack(name: str, loss_fn, **options) -> Attack:
    """The attack called ``name`` (a key of :data:`ATTACKS`, case and ``-``/``_`` insensitive).

    ``options`` are ``attack.*`` options of the settings schema (``eps``, ``steps``, ``n``, ...):
    one settings dict builds any method, so an option this method does not use is left out, and
    so is one set to ``None`` (the method's own default applies: that is how a preset leaves
    ``decay`` and ``random_start`` to each method). An option the schema does not know is an
    error. Raises :class:`IkdError` for an unknown name, option or an invalid value.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in ATTACKS:
        raise IkdError(f"unknown attack method '{name}'; choose one of: {', '.join(ATTACKS)}")
    unknown = sorted(set(options) - set(pixel_options()) - set(_ALIASES.values()))
    if unknown:
        raise IkdError(f"unknown attack option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                       f"the options are {', '.join(pixel_options())}")
    cls = ATTACKS[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "loss_fn"}
    kwargs = {_ALIASES.get(o, o): v for o, v in options.items() if v is not None and _ALIASES.get(o, o) in accepted}
    return cls(loss_fn, **kwargs)


__all__ = ["ATTACKS", "Attack", "BoxAffine", "DIFGSM", "FGSM", "MDIFGSM", "MIFGSM", "PGD", "TIFGSM", "VMIFGSM",
           "build_attack", "gaussian_kernel", "input_diversity", "l1_normalise", "to_uint8"]
