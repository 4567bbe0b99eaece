"""hpac.io: image files read as the pixels they hold (PNG, TIFF, PNM, BMP, GIF, WebP, JPEG XL),
sizes checked before decoding, written files read back the same, what is refused and why."""
from __future__ import annotations

import numpy as np
import pytest

import hpac
from conftest import smooth_image
from test_codec import CASES

def _png_of_zeros(height: int, width: int, rows: int | None = None) -> bytes:
    """An 8-bit gray PNG of zeros declaring height x width; ``rows``: write only that many
    rows of data (a header for the size alone). 40000 x 40000 in full takes 1.6 MB."""
    import struct
    import zlib

    z = zlib.compressobj(1)
    row = b"\0" * (width + 1)
    idat = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_images_too_big_for_the_format_are_refused_before_decoding(tmp_path):
    """A small file can declare a huge image: its size is checked from the header, so no
    pixel is decoded (a 1.6 MB PNG of 40000 x 40000 zeros used to take 1.8 GB first)."""
    import io
    import subprocess
    import sys

    from PIL import Image as PILImage

    from hpac.io.readers import read_image

    side = (1 << 14) + 1  # 16385 x 16385 is just above the format's 2^28 pixels
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|u1", "fortran_order": False, "shape": (side, side)})
    ppm = io.BytesIO()
    PILImage.new("L", (1, 1)).save(ppm, "PPM")
    for data in (_png_of_zeros(side, side, rows=1), npy.getvalue(), _tiff_header(side, side),
                 ppm.getvalue().replace(b"1 1", f"{side} {side}".encode())):
        with pytest.raises(hpac.UnsupportedImageError, match="exceeds the format limit"):
            read_image(data)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_of_zeros(40000, 40000))
    # VmHWM, the peak of this process alone (ru_maxrss would include the pytest process's,
    # which Linux carries over to a child through fork and exec)
    code = ("import sys\nfrom hpac.tools.cli import main\nrc = main(['encode', sys.argv[1], sys.argv[2]])\n"
            "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(bomb), str(tmp_path / "b.hpac")], capture_output=True)
    assert r.returncode != 0 and b"exceeds the format limit" in r.stderr, r.stderr[-500:]
    assert int(r.stdout.split()[-1]) < 600_000  # KiB: far below the 1.6 GB of pixels
    assert not (tmp_path / "b.hpac").exists()


def _tiff_header(width: int, height: int, samples: int = 1, photometric: int = 1, bits: int = 8) -> bytes:
    """A TIFF with one IFD and no pixel data: what a small hostile file can declare."""
    import struct

    tags = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, photometric), (273, 4, 8),
            (277, 3, samples), (278, 4, height), (279, 4, width * height * samples)]
    return (b"II*\0" + struct.pack("<IH", 8, len(tags))
            + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags) + b"\0\0\0\0")


def test_tiff_and_npy_headers_are_checked_before_decoding():
    """Pillow's TIFF plugin refuses photometric interpretations that libtiff decodes (here
    LogL, 32844), so its size was unknown and libtiff allocated whatever the file declared;
    and samples per pixel multiply the pixels: a 6 KB TIFF of 4000 x 4000 x 64 took 1 GB
    before being refused. Sizes and channels now come from the tags themselves."""
    import io

    from hpac.io.readers import read_image

    side = (1 << 14) + 1
    with pytest.raises(hpac.UnsupportedImageError, match="exceeds the format limit"):
        read_image(_tiff_header(side, side, photometric=32844))
    with pytest.raises(hpac.UnsupportedImageError, match="64 channels"):
        read_image(_tiff_header(4000, 4000, samples=64))
    with pytest.raises(hpac.UnsupportedImageError, match="32-bit"):
        read_image(_tiff_header(4000, 4000, bits=32))
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|u1", "fortran_order": False, "shape": (4000, 4000, 64)})
    with pytest.raises(hpac.UnsupportedImageError, match="64 channels"):
        read_image(npy.getvalue())
    with pytest.raises(hpac.UnsupportedImageError, match="TIFF header"):
        read_image(b"II*\0\xff\xff\xff\x7f")  # first IFD far past the end


def test_broken_pngs_are_refused_before_libpng_sees_them():
    """imagecodecs 2026.3 drops a reference to None each time libpng fails on a PNG; Python
    3.11 aborts ("deallocating None") once the count reaches zero, so a long-running process
    given enough broken PNGs died. Broken files are now refused by Pillow's check first."""
    import gc
    import struct
    import sys
    import zlib

    from hpac.io.readers import read_image
    from hpac.io.writers import write_png

    good = bytearray(write_png(smooth_image(32, 32, 3)))
    at = good.index(b"IDAT")
    (length,) = struct.unpack(">I", good[at - 4 : at])
    good[at + 4 + length // 2] ^= 0x5A  # corrupt the deflate stream, then make the chunk's CRC right again
    good[at + 4 + length : at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(good[at : at + 4 + length])))
    broken = bytes(good)
    with pytest.raises(hpac.UnsupportedImageError, match="cannot read image"):
        read_image(broken)
    gc.collect()
    before = sys.getrefcount(None)  # a constant on Python 3.12+, where None is immortal
    for _ in range(2000):
        with pytest.raises(hpac.UnsupportedImageError):
            read_image(broken)
    gc.collect()
    assert sys.getrefcount(None) - before > -500  # was -2000: one reference per broken file


def test_pillow_read_formats_hold_what_the_format_holds(monkeypatch):
    """PPM/PGM (and the PNG check) use Pillow's plugin classes directly: Image.open warns
    above Image.MAX_IMAGE_PIXELS (89 Mpx) and refuses twice that, below the format's 268 Mpx."""
    import io
    import warnings

    from PIL import Image as PILImage

    from hpac.io.readers import read_image
    from hpac.io.writers import write_png

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)  # so that a 9 x 7 image stands for a huge one
    rgb = smooth_image(9, 7, 3)
    ppm = io.BytesIO()
    PILImage.fromarray(rgb).save(ppm, "PPM")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (ppm.getvalue(), write_png(rgb)):
            assert np.array_equal(read_image(data).pixels, rgb)


@pytest.mark.parametrize("layout", [{}, {"compression": "lzw"}, {"compression": "deflate"},
                                    {"compression": "packbits"}, {"byteorder": ">"}, {"tile": (16, 16)},
                                    {"rowsperstrip": 3}, {"planarconfig": "separate"}])
def test_tiff_layouts_read_as_their_pixels(layout):
    """Every TIFF layout libtiff writes reads back as the same (H, W, C) values; planar
    ("separate") files decode as (C, H, W) and were refused until session 21."""
    import imagecodecs

    from hpac.io.readers import read_image

    for arr in (smooth_image(13, 11, 1), smooth_image(13, 11, 3), smooth_image(13, 11, 1, dtype=np.uint16),
                smooth_image(13, 11, 1, dtype=np.int16), smooth_image(13, 11, 4).astype(np.uint16) * 257):
        src = np.moveaxis(arr, 2, 0) if layout.get("planarconfig") == "separate" else arr
        if src.shape[-1] == 1 or src.shape[0] == 1:
            src = src.reshape(arr.shape[:2])
        extra = {"photometric": "rgb"} if arr.shape[2] >= 3 else {}
        data = imagecodecs.tiff_encode(np.ascontiguousarray(src).copy(), **layout, **extra)  # copy: ">" swaps in place
        got = read_image(data).pixels
        assert got.dtype == arr.dtype and np.array_equal(got, arr), (layout, arr.shape, arr.dtype)


def _pnm(magic: bytes, arr: np.ndarray, maxval: int, header_comment: bool = False) -> bytes:
    """A PGM/PPM of (H, W) or (H, W, 3) samples written by the Netpbm rules."""
    h, w = arr.shape[:2]
    head = magic + (b"\n# made by a test\n" if header_comment else b"\n") + b"%d %d\n%d\n" % (w, h, maxval)
    if magic in (b"P5", b"P6"):
        return head + arr.astype(">u2" if maxval > 255 else "u1").tobytes()
    rows = [" ".join(map(str, row.ravel())).encode() for row in arr]
    return head + b"\n# a comment in the raster\n".join(rows) + b"\n"


@pytest.mark.parametrize("maxval", [1, 100, 255, 1023, 4095, 65535])
@pytest.mark.parametrize("magic", [b"P5", b"P6", b"P2", b"P3"])
def test_pnm_reads_the_stored_samples(magic, maxval):
    """PGM/PPM samples come back exactly as stored, whatever the maxval. Through Pillow (until
    session 22) a maxval other than 255 or 65535 was rescaled to full range, and a 16-bit
    PPM was read as 8-bit: values changed before a 'lossless' encode."""
    from hpac.io.readers import read_image

    channels = 3 if magic in (b"P3", b"P6") else 1
    arr = np.random.default_rng(maxval).integers(0, maxval + 1, (7, 9, channels))
    arr[0, 0, 0] = maxval
    img = read_image(_pnm(magic, arr if channels == 3 else arr[:, :, 0], maxval, header_comment=True))
    assert img.pixels.dtype == (np.uint16 if maxval > 255 else np.uint8)
    assert np.array_equal(img.pixels, arr)


def test_bad_pnm_files_are_refused():
    from hpac.errors import UnsupportedImageError
    from hpac.io.readers import read_image

    arr = np.array([[0, 7, 9]])
    for data, why in [(_pnm(b"P5", arr, 8), "above the file's maxval"), (_pnm(b"P2", arr, 8), "above the file's maxval"),
                      (_pnm(b"P5", arr, 1000)[:-1], "truncated"), (_pnm(b"P3", np.dstack([arr] * 3), 9)[:-4], "truncated"),
                      (b"P2\n3 1\n65535\n1 2 70000\n", "70000 above"), (b"P3\n1 1\n255\n1 2 300\n", "300 above"),
                      (b"P2\n3 1\n9\n1 2 x3\n", "other than decimal"), (b"P5\n3 1\n0\n\0\0\0", "maxval 0"),
                      (b"P5\n3 1\n70000\n" + bytes(6), "maxval 70000"), (b"P5 3 1\n", "header"),
                      (b"P2\n3 1\n9\n1 2 12345678901\n", "more than 10 digits")]:
        with pytest.raises(UnsupportedImageError, match=why):
            read_image(data)


def test_16_bit_ppm_round_trips_through_the_codec(tiny_models):
    from hpac.io.readers import read_image

    arr = smooth_image(11, 13, 3, np.uint16) >> 2  # 10-bit samples, maxval 1023
    img = read_image(_pnm(b"P6", arr, 1023))
    models = list(tiny_models.values())
    assert img.bits == 10 and np.array_equal(hpac.decode(hpac.encode(img.pixels, model=models, threads=1),
                                                         model=models), arr)


def test_tiff_reads_as_the_image_it_shows():
    """Palette, min-is-white and bilevel TIFF read as the colours or grays they show (Pillow's
    reading is the reference). Until session 22 a palette TIFF was coded as its indices (the
    colours were lost) and min-is-white gray came back inverted in the PNG; CMYK and
    uncompressed YCbCr were coded as if RGB(A). Those are now refused with a clear error;
    JPEG-compressed YCbCr, which libtiff decodes to RGB, still reads."""
    import io

    import imagecodecs
    from PIL import Image as PILImage

    from hpac.io.readers import read_image

    def shown(data: bytes, mode: str) -> np.ndarray:
        with PILImage.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert(mode))
        return arr.reshape(*arr.shape[:2], -1)

    rng = np.random.default_rng(22)
    palette = PILImage.fromarray(rng.integers(0, 5, (9, 7)).astype(np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0, 7, 7, 7, 255, 255, 254])
    gray = rng.integers(0, 256, (9, 7)).astype(np.uint8)
    bits = rng.integers(0, 2, (9, 7)).astype(bool)
    cases = [(palette, "RGB"), (PILImage.fromarray(bits), "L")]
    for im, mode in cases:
        buf = io.BytesIO()
        im.save(buf, "TIFF")
        got = read_image(buf.getvalue()).pixels
        assert got.dtype == np.uint8 and np.array_equal(got, shown(buf.getvalue(), mode)), mode
    for arr, mode in ((gray, "L"), (bits, "L")):
        data = imagecodecs.tiff_encode(arr.copy(), photometric="miniswhite")
        assert np.array_equal(read_image(data).pixels, shown(data, mode))
    deep = rng.integers(0, 65536, (9, 7)).astype(np.uint16)
    data = imagecodecs.tiff_encode(deep.copy(), photometric="miniswhite")
    assert np.array_equal(read_image(data).pixels[:, :, 0], 65535 - deep)
    rgb = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    jpeg = imagecodecs.tiff_encode(rgb.copy(), compression="jpeg", photometric="ycbcr")  # libtiff gives RGB
    assert np.array_equal(read_image(jpeg).pixels, shown(jpeg, "RGB"))
    cmyk = io.BytesIO()
    PILImage.fromarray(rgb).convert("CMYK").save(cmyk, "TIFF")
    for data, name in ((cmyk.getvalue(), "CMYK"), (imagecodecs.tiff_encode(rgb.copy(), photometric="ycbcr"), "YCbCr")):
        with pytest.raises(hpac.UnsupportedImageError, match=f"{name} TIFF"):
            read_image(data)


def _packed_gray_tiff(values: np.ndarray, bits: int, photometric: int) -> bytes:
    """A 1-7-bit gray TIFF (rows packed MSB first), which neither Pillow nor imagecodecs writes."""
    import struct

    rows = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:].ravel()).tobytes()
            for row in values]
    pixels = b"".join(rows)
    h, w = values.shape
    tags = [(256, 4, w), (257, 4, h), (258, 3, bits), (259, 3, 1), (262, 3, photometric), (273, 4, 8 + 2 + 12 * 9 + 4),
            (277, 3, 1), (278, 4, h), (279, 4, len(pixels))]
    return (b"II*\0" + struct.pack("<IH", 8, len(tags))
            + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags) + b"\0\0\0\0" + pixels)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("photometric", [0, 1])
def test_few_bit_gray_tiff_reads_as_pillow_shows_it(bits, photometric):
    import io

    from PIL import Image as PILImage

    from hpac.io.readers import read_image

    values = np.random.default_rng(bits).integers(0, 1 << bits, (3, 5))
    data = _packed_gray_tiff(values, bits, photometric)
    with PILImage.open(io.BytesIO(data)) as im:
        shown = np.asarray(im.convert("L"))
    assert np.array_equal(read_image(data).pixels[:, :, 0], shown)


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_written_tiff_and_pnm_read_back_the_same_pixels(name, make):
    from hpac.io.image import as_image
    from hpac.io.readers import read_image
    from hpac.io.writers import write_pnm, write_tiff

    img = as_image(make())
    assert np.array_equal(read_image(write_tiff(img.pixels)).pixels, img.pixels)
    if img.pixels.shape[2] in (1, 3) and img.pixels.dtype != np.int16:
        back = read_image(write_pnm(img.pixels, img.bits)).pixels
        assert back.dtype == img.pixels.dtype and np.array_equal(back, img.pixels)
    else:
        with pytest.raises(hpac.UnsupportedImageError, match="PGM/PPM hold"):
            write_pnm(img.pixels, img.bits)


def _reference_pnm(data: bytes) -> np.ndarray | None:
    """A slow, plain reading of the Netpbm rules (None: not a valid file), for the test below."""
    import re

    pos, fields = 2, []
    while len(fields) < 3:
        while data[pos:pos + 1].isspace() or data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) if data[pos:pos + 1] == b"#" else pos + 1
        start = pos
        while data[pos:pos + 1].isdigit():
            pos += 1
        fields.append(int(data[start:pos]))
    (width, height, maxval), channels = fields, 3 if data[:2] in (b"P3", b"P6") else 1
    count, size = width * height * channels, 2 if maxval > 255 else 1
    if data[:2] in (b"P5", b"P6"):
        raw = data[pos + 1:pos + 1 + count * size]
        values = np.frombuffer(raw, ">u2" if size == 2 else "u1") if len(raw) == count * size else np.zeros(0)
    else:
        values = np.array([int(t) for t in re.sub(rb"#[^\r\n]*", b" ", data[pos + 1:]).split()[:count]])
    if len(values) < count or values.max(initial=0) > maxval:
        return None
    return values.reshape(height, width, channels)


def test_pnm_reader_matches_a_reference_parser():
    """Random PGM/PPM files (mixed whitespace, comments, truncated rasters, samples above
    maxval) read as a plain reading of the format says, or are refused where it refuses.
    Found in review: a plain sample above maxval was cast before the check and wrapped."""
    from hpac.io.readers import read_image

    rng = np.random.default_rng(22)
    seps = [b" ", b"\n", b"\t", b"  ", b"\r\n", b" # a comment\n"]
    for _ in range(400):
        magic = [b"P2", b"P3", b"P5", b"P6"][rng.integers(4)]
        maxval = int(rng.choice([1, 3, 100, 255, 256, 1000, 4095, 65535]))
        h, w = rng.integers(1, 6, 2)
        over = 3 * (rng.random() < 0.1)  # samples above maxval; binary ones only as far as their bytes go
        top = maxval + over if magic in (b"P2", b"P3") else min(maxval + over, 65535 if maxval > 255 else 255)
        values = rng.integers(0, top + 1, (h, w, 3 if magic in (b"P3", b"P6") else 1))
        head = magic + b"".join(seps[rng.integers(6)] + str(v).encode() for v in (w, h, maxval)) + b"\n"
        if magic in (b"P5", b"P6"):
            body = values.astype(">u2" if maxval > 255 else "u1").tobytes()
        else:
            body = b"".join(str(v).encode() + seps[rng.integers(6)] for v in values.ravel())
        if rng.random() < 0.1:
            body = body[:rng.integers(len(body))]
        want = _reference_pnm(head + body)
        try:
            got = read_image(head + body).pixels
        except hpac.UnsupportedImageError:
            got = None
        assert (want is None) == (got is None), head + body
        assert want is None or np.array_equal(got, want), head + body


def test_multi_image_files_are_refused_not_cut_to_their_first_image():
    """An animated PNG or a multi-page TIFF used to be coded as its first image alone, the
    rest dropped without a word; a TIFF whose later IFD is a thumbnail still reads."""
    import io

    import imagecodecs
    from PIL import Image as PILImage

    from hpac.io.readers import read_image

    rgb = smooth_image(8, 10, 3)
    apng = io.BytesIO()
    PILImage.fromarray(rgb).save(apng, "PNG", save_all=True, append_images=[PILImage.fromarray(rgb[::-1])])
    first = imagecodecs.tiff_encode(rgb)
    with pytest.raises(hpac.UnsupportedImageError, match="animated PNG with 2 frames"):
        read_image(apng.getvalue())
    with pytest.raises(hpac.UnsupportedImageError, match="more than one page"):
        read_image(imagecodecs.tiff_encode(rgb[::-1].copy(), appendto=first))
    with_thumbnail = imagecodecs.tiff_encode(rgb[::2, ::2].copy(), subfiletype=1, appendto=first)
    assert np.array_equal(read_image(with_thumbnail).pixels, rgb)


def _pillow_file(arr: np.ndarray, fmt: str, **kw) -> bytes:
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    frames = [PILImage.fromarray(a) for a in (arr if isinstance(arr, list) else [arr])]
    frames[0].save(buf, fmt, save_all=len(frames) > 1, append_images=frames[1:], **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,channels,kw", [("BMP", 3, {}), ("BMP", 1, {}), ("GIF", 3, {}),
                                             ("WEBP", 3, {"lossless": True}), ("WEBP", 4, {"lossless": True})])
def test_bmp_gif_and_lossless_webp_inputs_round_trip(fmt, channels, kw, tiny_models):
    """Pillow's formats read as the pixels Pillow decodes (a GIF's palette as RGB), then code
    bit-exactly."""
    import io

    from PIL import Image as PILImage

    from hpac import codec
    from hpac.io.readers import read_image

    src = smooth_image(17, 23, channels)
    data = _pillow_file(src[:, :, 0] if channels == 1 else src, fmt, **kw)
    img = read_image(data)
    with PILImage.open(io.BytesIO(data)) as im:
        want = np.asarray(im.convert("RGB") if im.mode == "P" else im)
    assert np.array_equal(img.pixels.reshape(want.shape), want)
    if fmt != "GIF":  # a GIF's palette is a lossy reduction; the others keep the source
        assert np.array_equal(img.pixels.reshape(src.shape), src)
    out = codec.decode(codec.encode(img, tiny_models), list(tiny_models.values()))
    assert np.array_equal(out.reshape(img.pixels.shape), img.pixels)


def test_animated_gif_and_webp_lossy_webp_and_jpeg_are_refused_with_a_reason():
    from hpac.errors import UnsupportedImageError
    from hpac.io.readers import read_image

    a, b = smooth_image(9, 8, 3), smooth_image(9, 8, 3, seed=1)
    with pytest.raises(UnsupportedImageError, match="animated GIF with 2 frames"):
        read_image(_pillow_file([a, b], "GIF"))
    with pytest.raises(UnsupportedImageError, match="animated WebP"):
        read_image(_pillow_file([a, b], "WEBP", lossless=True))
    with pytest.raises(UnsupportedImageError, match="lossy WebP"):
        read_image(_pillow_file(a, "WEBP", quality=90))
    huge = bytearray(_pillow_file(a, "WEBP", lossless=True, exif=b"Exif\x00\x00MM"))
    assert huge[12:16] == b"VP8X"
    huge[24:30] = b"\xff\xff\xff\xff\xff\x00"  # a 16777216 x 65536 canvas: refused before Pillow allocates it
    with pytest.raises(UnsupportedImageError, match="exceeds the format limit"):
        read_image(bytes(huge))
    jpeg = _pillow_file(a, "JPEG", quality=95)
    with pytest.raises(UnsupportedImageError, match="JPEG input.*jpeg_pixels=True"):
        read_image(jpeg)
    assert read_image(jpeg, jpeg_pixels=True).pixels.shape == (9, 8, 3)


@pytest.mark.parametrize("shape,dtype,container", [((17, 23, 3), np.uint8, False), ((17, 23, 4), np.uint8, True),
                                                   ((19, 21), np.uint16, False), ((12, 300, 3), np.uint16, True)])
def test_lossless_jpeg_xl_input_round_trips(shape, dtype, container, tiny_models):
    """A lossless JPEG XL (bare codestream or ISO BMFF container) reads as its exact source pixels."""
    import imagecodecs

    from hpac import codec
    from hpac.io.readers import read_image

    src = np.random.default_rng(3).integers(0, 256 if dtype == np.uint8 else 1 << 12, shape).astype(dtype)
    img = read_image(imagecodecs.jpegxl_encode(src, lossless=True, usecontainer=container))
    assert np.array_equal(img.pixels.reshape(src.shape), src)
    out = codec.decode(codec.encode(img, tiny_models), list(tiny_models.values()))
    assert np.array_equal(out.reshape(img.pixels.shape), img.pixels)


def test_lossy_animated_and_huge_jpeg_xl_are_refused_before_decoding():
    import imagecodecs

    from hpac.errors import UnsupportedImageError
    from hpac.io.readers import read_image

    a = smooth_image(16, 24, 3)
    with pytest.raises(UnsupportedImageError, match="lossy JPEG XL"):
        read_image(imagecodecs.jpegxl_encode(a, distance=1.0))
    with pytest.raises(UnsupportedImageError, match="animated JPEG XL"):
        read_image(imagecodecs.jpegxl_encode(np.stack([a, a[::-1]]), lossless=True))
    # SizeHeader: not small, height selector 3 (1 + 30 bits), ratio 1 (square): 2^30 x 2^30
    bits = 0 | (3 << 1) | ((2**30 - 1) << 3) | (1 << 33)
    huge = b"\xff\x0a" + bits.to_bytes(5, "little") + bytes(8)
    with pytest.raises(UnsupportedImageError, match="exceeds the format limit"):
        read_image(huge)
    with pytest.raises(UnsupportedImageError, match="truncated"):
        read_image(b"\xff\x0a\x00")
