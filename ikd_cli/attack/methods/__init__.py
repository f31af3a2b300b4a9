"""L-inf attacks on a detector's loss, in pure PyTorch (no mmcv/mmdet needed).

``build_attack("difgsm", loss_fn, eps=8, alpha=2, steps=5)`` gives a callable ``x0 -> x_adv``
on float pixels in [0, 255]; :func:`to_uint8` rounds the result so the budget holds on disk.
See :mod:`ikd_cli.attacks.base` for the conventions shared by every method.
"""

from __future__ import annotations

import inspect

from ikd_cli.core.errors import IkdError
from .base import Attack, BoxAffine, input_diversity, l1_normalise, to_uint8
from .gradient_sign import FGSM, PGD
from .momentum import DIFGSM, MDIFGSM, MIFGSM
from .tifgsm import TIFGSM, gaussian_kernel
from .vmifgsm import VMIFGSM

# In the order of ``ikd_cli.config.presets.AttackMethod`` (the choices ``--method`` lists).
ATTACKS = {
    "difgsm": DIFGSM,
    "mifgsm": MIFGSM,
    "tifgsm": TIFGSM,
    "vmifgsm": VMIFGSM,
    "m_difgsm": MDIFGSM,
    "pgd": PGD,
    "fgsm": FGSM,
}

# Option spellings other code uses for a method's argument (presets write ``n`` for VMI's N, as
# YAML keys and command-line options are lower case).
_ALIASES = {"n": "N"}


def build_attack(name: str, loss_fn, **options) -> Attack:
    """The attack called ``name`` (a key of :data:`ATTACKS`, case and ``-``/``_`` insensitive).

    Options the method does not take are ignored, and so are options set to ``None`` (the
    method's default applies: that is how a preset leaves ``decay`` and ``random_start`` to each
    method), so one settings dict can build any method. ``n`` is accepted for
    VMI-FGSM's ``N``. Raises :class:`IkdError` for an unknown name or an invalid value.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in ATTACKS:
        raise IkdError(f"unknown attack method '{name}'; choose one of: {', '.join(ATTACKS)}")
    cls = ATTACKS[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "loss_fn"}
    kwargs = {}
    for option, value in options.items():
        option = option if option in accepted else _ALIASES.get(option, option)
        if option in accepted and value is not None:
            kwargs[option] = value
    return cls(loss_fn, **kwargs)


__all__ = ["ATTACKS", "Attack", "BoxAffine", "DIFGSM", "FGSM", "MDIFGSM", "MIFGSM", "PGD", "TIFGSM", "VMIFGSM",
           "build_attack", "gaussian_kernel", "input_diversity", "l1_normalise", "to_uint8"]
