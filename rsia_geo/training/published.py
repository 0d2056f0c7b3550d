"""Read the published image-voice datasets' layout (UCM IV, Sydney IV, RSICD IV, RSITMD IV).

Those sets ship images, spoken captions named ``<image stem>S<k>.wav`` (``k`` = 1..5 for
Sydney/UCM/RSITMD; a global index for RSICD), and split lists: text files with one image file
name per line (ALAC's lists repeat each image once per clip). :func:`read_iv_layout` turns such a
folder into a voicing-style ``manifest.jsonl``, so ``rsia-geo train`` and ``rsia-geo evaluate``
run on human recordings exactly as on synthesised ones.

Recognised layout (folder names are matched case-insensitively)::

    ROOT/
      images/ (or imgs/, image/)          1.tif, 2.tif, ...
      audio/  (or audios/, wav/, sound/)  1S1.wav ... 1S5.wav, ...
      <split>*.txt  (e.g. train.txt, val.txt, test_filename.txt), image names, one per line
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rsia_geo.training.dataset import DataError

__all__ = ["read_iv_layout"]

_IMAGE_DIRS = ("images", "imgs", "image", "img")
_AUDIO_DIRS = ("audio", "audios", "wav", "wavs", "sound", "sounds")
_IMAGE_EXT = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
_CLIP = re.compile(r"^(?P<stem>.+?)S(?P<k>\d+)$")
_SPLITS = ("train", "val", "test")


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() in names:
            return child
    raise DataError(f"{str(root)!r} has no {what} folder (looked for {', '.join(names)})")


# Over 80 lines with its docstring (~20): one pass over a published layout (folders, split
# lists, clips) whose error messages each name the missing piece; split, each part would
# need the layout's state passed along.
def read_iv_layout(
    root: str | Path, out_dir: str | Path, *, splits: dict[str, str | Path] | None = None
) -> Path:
    """Index an image-voice dataset folder into ``out_dir/manifest.jsonl``.

    Args:
        root: Dataset folder.
        out_dir: Where to write the manifest (clip paths are stored relative to it).
        splits: Split name -> list file; by default every ``*.txt`` in ``root`` whose name
            starts with train/val/test.

    Returns:
        The manifest path.

    Raises:
        DataError: Missing folders or lists, images without clips, clips without images, or a
            list naming an image that does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image-voice folder {str(root)!r} does not exist")
    img_dir = _find_dir(root, _IMAGE_DIRS, "image")
    aud_dir = _find_dir(root, _AUDIO_DIRS, "audio")
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXT}
    clips: dict[str, list[tuple[int, Path]]] = {}
    orphans = []
    for p in sorted(aud_dir.iterdir()):
        if p.suffix.lower() not in (".wav", ".flac", ".ogg", ".mp3"):
            continue
        m = _CLIP.match(p.stem)
        if not m or m.group("stem") not in images:
            orphans.append(p.name)
            continue
        clips.setdefault(m.group("stem"), []).append((int(m.group("k")), p))
    if orphans:
        raise DataError(
            f"{len(orphans)} clips match no image (expected <image stem>S<k>.wav), "
            f"e.g. {orphans[:3]}"
        )
    if splits is None:
        splits = {}
        for f in sorted(root.glob("*.txt")):
            for s in _SPLITS:
                if f.name.lower().startswith(s):
                    splits.setdefault(s, f)
    if not splits:
        raise DataError(f"no split lists (train*.txt, val*.txt, test*.txt) in {str(root)!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, list_path in splits.items():
        names = [ln.strip() for ln in Path(list_path).read_text().splitlines() if ln.strip()]
        stems = list(dict.fromkeys(Path(n).stem for n in names))
        missing = [s for s in stems if s not in images]
        if missing:
            raise DataError(
                f"{str(list_path)!r} names {len(missing)} images that are not in "
                f"{str(img_dir)!r}, e.g. {missing[:3]}"
            )
        for stem in stems:
            if stem not in clips:
                raise DataError(
                    f"image {stem!r} of split {split!r} has no clip "
                    f"({stem}S1.wav...) in {str(aud_dir)!r}"
                )
            for rank, (k, clip) in enumerate(sorted(clips[stem])):
                rows.append(
                    {
                        "clip": str(Path(clip).resolve()),
                        "image": str(images[stem].resolve()),
                        "image_id": stem,
                        "split": split,
                        "label": None,
                        "caption": None,
                        "caption_index": rank,
                        "voice_index": 0,
                        "speaker": "recorded",
                        "source_index": k,
                    }
                )
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
