"""Layer 7 — backdoor: IKD as a backdoor defence for detectors (``ikd backdoor``).

``poison`` writes a BadNets-style poisoned copy of a preset's data (a checkerboard trigger on a
share of the training images; global misclassification or object disappearance) and the
triggered val split; ``victim`` trains the attacker's model on it; ``subset`` draws the
defender's clean share of the training data; ``defend`` runs the three defences on it
(fine-tuning, NAD, IKD = NAD + IKD's augmentation); ``asr`` and ``evaluate`` measure attack
success and clean AP; ``table`` puts seeds side by side. ``layout`` says where it all lives.

Imports ``core``, ``config``, ``data``, ``attack``, ``train``, ``distill`` and ``evaluate``
(inside functions where they pull in torch); nothing imports it but ``cli``.
"""
