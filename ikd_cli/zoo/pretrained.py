"""Where a model's ImageNet init (``init_cfg=dict(type='Pretrained', checkpoint=...)`` in the zoo's
configs) comes from, and where mmcv 1.7 looks for it on disk.

mmcv resolves ``torchvision://resnet50`` through ``get_torchvision_models()`` (its
``model_zoo/torchvision_0.12.json`` plus torchvision's weight enums) to an https URL, and
``open-mmlab://name`` through ``get_external_models()``; both, and a plain http(s) URL, are then
loaded by ``load_from_http`` -> ``torch.hub.load_state_dict_from_url``, which reads
``<torch.hub.get_dir()>/checkpoints/<last segment of the URL>`` if it exists and downloads it
there otherwise. We ask mmcv and torch themselves for both answers, so the file we fetch is the
one they will find.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Optional

from ikd_cli.core.errors import IkdError
from ikd_cli.zoo.registry import Checkpoint, plain_file_name, sha256_prefix_from_name

_TORCHVISION = ("torchvision://", "modelzoo://")
_OPENMMLAB = ("open-mmlab://", "openmmlab://")


def init_url(source: str) -> Optional[str]:
    """The URL mmcv downloads ``source`` from; None for a local file (nothing to download)."""
    from mmcv.runner import checkpoint as mmcv_checkpoint

    if source.startswith(_TORCHVISION):
        name = source.split("://", 1)[1].lower().replace("_weights", "")  # as load_from_torchvision
        urls = mmcv_checkpoint.get_torchvision_models()
    elif source.startswith(_OPENMMLAB):
        name = source.split("://", 1)[1]
        urls = mmcv_checkpoint.get_external_models()
        name = mmcv_checkpoint.get_deprecated_model_names().get(name, name)
    elif source.startswith(("http://", "https://")):
        return source
    else:
        return None
    if name not in urls:
        raise IkdError(f"the model config starts from {source}, which mmcv does not know")
    url = urls[name]
    return url if url.startswith(("http://", "https://")) else None  # a path inside mmcv's home


def hub_dir() -> Path:
    """``<torch hub dir>/checkpoints``: where ``torch.hub.load_state_dict_from_url`` caches."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def init_checkpoint(source: str) -> Optional[tuple[Checkpoint, Path]]:
    """(what to download, the folder mmcv will read it from) for a model's init ``source``;
    None when the init is a local file."""
    url = init_url(source)
    if url is None:
        return None
    # torch names the cached file by the URL's raw last segment (not percent-decoded).
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    plain_file_name(filename, url)
    ckpt = Checkpoint(name=source, url=url, filename=filename, sha256_prefix=sha256_prefix_from_name(filename),
                      description=f"backbone init {source}")
    return ckpt, hub_dir()
