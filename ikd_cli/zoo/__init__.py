"""Layer 1 — model-zoo checkpoints: registry.py (what files exist: names, URLs, sha256 prefixes),
transfer.py (the verified, resumable HTTP download behind ``ikd download``), pretrained.py (where
a backbone init comes from). Imports only ``core``; no torch.
"""
