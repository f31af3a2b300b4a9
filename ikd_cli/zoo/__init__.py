"""Layer 1 — model-zoo checkpoints: the registry and a verified, resumable download
(``ikd download``). Imports only ``core``; no torch.
"""
