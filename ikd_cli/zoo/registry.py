"""What model-zoo files exist: their names, URLs and the sha256 prefix their file names carry.

The OpenMMLab zoo names every checkpoint ``<config>_<date>-<8 hex>.pth``, where the 8 hex digits
are the start of the file's sha256; :mod:`.transfer` checks that prefix after every download and
before reusing a file already on disk. Nothing here touches the network or the disk.

Which files a preset needs (its teacher, its backbone inits) depends on the preset's mmdet
configs, which live a layer above (``config``): that list is ``train/downloads.py``'s.
"""

from __future__ import annotations

import difflib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from ikd_cli.core.errors import IkdError

_ZOO = "https://download.openmmlab.com/mmdetection/v2.0"
_PREFIX_RE = re.compile(r"-([0-9a-f]{8})\.pth$")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    url: str
    filename: str
    sha256_prefix: Optional[str]  # None: the file name carries no hash, so nothing is verified
    description: str = ""

    @property
    def verifiable(self) -> bool:
        return self.sha256_prefix is not None


def sha256_prefix_from_name(filename: str) -> Optional[str]:
    """The 8-hex sha256 prefix in an OpenMMLab checkpoint name (``..._20200130-366f5af1.pth``)."""
    match = _PREFIX_RE.search(filename)
    return match.group(1) if match else None


# Here rather than in .transfer (which joins the name to a folder): resolve() refuses such a name
# as soon as it reads the URL, and .transfer imports this module, not the other way round.
def plain_file_name(name: str, url: str) -> str:
    """``name`` if it is a plain base name, else an error. The name comes from the server's URL
    and is joined to the download folder: a segment that decodes to ``../x.pth``, an absolute
    path, a backslash or a NUL would write (unverified, for a name without a hash) outside it."""
    plain = (name not in ("", ".", "..") and "/" not in name and "\\" not in name
             and all(ch.isprintable() for ch in name))
    if not plain:
        raise IkdError(f"{url} names the file {name!r}, which is not a plain file name; "
                       "download it by hand and pass its path")
    return name


def _filename_from_url(url: str) -> str:
    # The zoo percent-encodes '+' in some names (gn-neck%2Bhead); store the decoded name on disk.
    return urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])


def _from_url(url: str, name: Optional[str] = None, description: str = "") -> Checkpoint:
    filename = _filename_from_url(url)
    return Checkpoint(
        name=name or filename.rsplit(".", 1)[0],
        url=url,
        filename=filename,
        sha256_prefix=sha256_prefix_from_name(filename),
        description=description,
    )


# URLs copied from mmdet 2.28's own metafiles (configs/<family>/metafile.yml, `Weights:`).
_ENTRIES = [
    ("retinanet_x101_64x4d_fpn_1x_coco",
     f"{_ZOO}/retinanet/retinanet_x101_64x4d_fpn_1x_coco/"
     "retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth",
     "teacher: RetinaNet X-101-64x4d FPN 1x (box AP 41.0)"),
    ("reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck+head_2x_coco",
     f"{_ZOO}/reppoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco/"
     "reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco_20200329-f87da1ea.pth",
     "teacher: RepPoints (moment) X-101 DCN GN 2x (box AP 44.2)"),
    ("cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco",
     f"{_ZOO}/dcn/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/"
     "cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth",
     "teacher: Cascade Mask R-CNN X-101-32x4d DCN 1x (box AP 47.3, mask AP 41.1)"),
    ("retinanet_r50_fpn_2x_coco",
     f"{_ZOO}/retinanet/retinanet_r50_fpn_2x_coco/"
     "retinanet_r50_fpn_2x_coco_20200131-fdb43119.pth",
     "student baseline: RetinaNet R-50 FPN 2x (box AP 37.4)"),
    ("reppoints_moment_r50_fpn_gn-neck+head_2x_coco",
     f"{_ZOO}/reppoints/reppoints_moment_r50_fpn_gn-neck%2Bhead_2x_coco/"
     "reppoints_moment_r50_fpn_gn-neck%2Bhead_2x_coco_20200329-91babaa2.pth",
     "student baseline: RepPoints (moment) R-50 GN 2x (box AP 38.6)"),
    ("mask_rcnn_r50_fpn_2x_coco",
     f"{_ZOO}/mask_rcnn/mask_rcnn_r50_fpn_2x_coco/"
     "mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40.pth",
     "student baseline: Mask R-CNN R-50 FPN 2x (box AP 39.2, mask AP 35.4)"),
    # FGD's Faster R-CNN, FCOS and GFL pairs and mmrazor's FCOS -> RetinaNet (configs/faster-rcnn,
    # fcos, gfl, fcos-retinanet.yaml); Faster R-CNN's teacher is mask-rcnn's, above.
    ("fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco",
     f"{_ZOO}/fcos/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/"
     "fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth",
     "teacher: FCOS R-101 caffe GN multi-scale 2x (box AP 40.8)"),
    ("gfl_r101_fpn_mstrain_2x_coco",
     f"{_ZOO}/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth",
     "teacher: GFL R-101 FPN multi-scale 2x (box AP 44.7)"),
    ("fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco",
     f"{_ZOO}/fcos/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco/"
     "fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco-ede514a8.pth",
     "teacher: FCOS X-101-64x4d GN multi-scale 2x (box AP 42.6)"),
    ("faster_rcnn_r50_fpn_2x_coco",
     f"{_ZOO}/faster_rcnn/faster_rcnn_r50_fpn_2x_coco/"
     "faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_20200504_210434-a5d8aa15.pth",
     "student baseline: Faster R-CNN R-50 FPN 2x (box AP 38.4)"),
    ("fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco",
     f"{_ZOO}/fcos/fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco/"
     "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco-d92ceeea.pth",
     "student baseline: FCOS R-50 caffe GN multi-scale 2x (box AP 38.5)"),
    ("gfl_r50_fpn_1x_coco",
     f"{_ZOO}/gfl/gfl_r50_fpn_1x_coco/gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth",
     "student baseline: GFL R-50 FPN 1x (box AP 40.2)"),
    ("retinanet_r50_fpn_1x_coco",
     f"{_ZOO}/retinanet/retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth",
     "student baseline: RetinaNet R-50 FPN 1x (box AP 36.5)"),
]

CHECKPOINTS: dict[str, Checkpoint] = {
    name: _from_url(url, name, desc) for name, url, desc in _ENTRIES
}


def resolve(name_or_url: str) -> Checkpoint:
    """A registry name, or an http(s) URL (verified only if its file name carries a hash)."""
    if name_or_url in CHECKPOINTS:
        return CHECKPOINTS[name_or_url]
    scheme = urllib.parse.urlparse(name_or_url).scheme.lower()
    if scheme in ("http", "https"):
        ckpt = _from_url(name_or_url, description="from URL")
        if not ckpt.filename:
            raise IkdError(f"cannot tell the file name from URL {name_or_url}; it must end in /<file>.pth")
        plain_file_name(ckpt.filename, name_or_url)
        return ckpt
    close = difflib.get_close_matches(name_or_url, list(CHECKPOINTS), n=3, cutoff=0.4)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise IkdError(
        f"unknown checkpoint {name_or_url!r}; {hint}"
        "run `ikd download --list` for the known names, or pass an http(s) URL"
    )
