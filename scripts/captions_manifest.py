"""Write a manifest of a split's captions without clips (what the text route reads from them).

``rsia-geo train-text --kind pretrained|bank`` on captions alone needs no voicing: each row is
one caption of one image (``clip`` names a file that is never read). The shipped pretrained
member and caption bank were built from ``runs/captions_train/manifest.jsonl``.

Usage:
    python scripts/captions_manifest.py ../shared/data/ucm/captions.json -o runs/captions_train \
        [--split train]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("captions", help="captions.json (UCM-Captions layout)")
    p.add_argument("-o", "--out", required=True, help="folder for manifest.jsonl")
    p.add_argument("--split", default="train")
    a = p.parse_args()
    src = Path(a.captions)
    meta = json.loads(src.read_text(encoding="utf-8"))
    rows = []
    for r in meta["images"]:
        if r["split"] != a.split:
            continue
        stem = Path(r["image"]).stem
        for j, caption in enumerate(r["captions"]):
            rows.append({
                "clip": f"audio/{stem}S{j + 1}.wav", "image": str(src.parent / r["image"]),
                "image_id": stem, "split": a.split, "label": r["class"], "caption": caption,
                "caption_index": j, "voice_index": 0,
            })  # fmt: skip
    if not rows:
        raise SystemExit(f"{src} has no images of split {a.split!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} captions -> {out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
