"""What an image file says besides its pixels: colour profile, EXIF, XMP, PNG text and colour
chunks, resolution. Read from PNG and TIFF input, kept in the container (metadata kind
:data:`KIND`, zlib-compressed records, docs/format.md), written back into PNG and TIFF output.

What travels between formats: the ICC profile, EXIF and XMP (byte for byte) and the resolution,
in both directions; PNG text and colour chunks (tEXt, zTXt, iTXt, sRGB, gAMA, cHRM, sBIT) are
written back into PNG only. Inside a TIFF, EXIF is the descriptive tags of the first IFD
(:data:`TIFF_EXIF_TAGS`) and its EXIF and GPS sub-IFDs; hpac keeps them as one EXIF block,
built and written with Pillow's EXIF serialiser.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

from ..errors import FormatError, UnsupportedImageError

MAX_BYTES = 1 << 26  # one block (profile, EXIF, XMP, chunk) or the whole record set, uncompressed
PNG_KEPT = (b"tEXt", b"zTXt", b"iTXt", b"sRGB", b"gAMA", b"cHRM", b"sBIT")  # stored as they are
_PNG_COLOUR = (b"sRGB", b"gAMA", b"cHRM", b"sBIT")  # must precede the image data
XMP_KEYWORD = b"XML:com.adobe.xmp"  # the iTXt keyword of XMP in PNG
ICC_NAME = b"ICC profile"  # the iCCP profile name hpac writes (the name is not kept)
TIFF_EXIF_TAGS = (270, 271, 272, 274, 305, 306, 315, 33432)  # description, make, model, orientation,
# software, date, artist, copyright: in a TIFF they sit in the image's own IFD
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_TIFF_ICC, _TIFF_XMP = 34675, 700
RESOLUTION_UNITS = {1: "no unit", 2: "inch", 3: "cm"}  # TIFF's ResolutionUnit values
# container records: u8 tag, u32 length, bytes
_ICC, _EXIF, _XMP, _PNG_CHUNK, _RESOLUTION = 1, 2, 3, 4, 5
_RES = struct.Struct("<5I")


@dataclass(frozen=True)
class ImageMetadata:
    """Metadata kept with an image; empty fields are absent.

    Attributes:
        icc: ICC profile bytes (decompressed).
        exif: EXIF block, TIFF-structured (starts b"II*\\0" or b"MM\\0*", as a PNG eXIf chunk).
        xmp: XMP packet (UTF-8 XML).
        png_chunks: (type, data) of the PNG chunks in :data:`PNG_KEPT`, in file order.
        resolution: (x numerator, x denominator, y numerator, y denominator, unit) pixels per
            unit, unit as TIFF's ResolutionUnit (:data:`RESOLUTION_UNITS`); None when absent.
    """

    icc: bytes = b""
    exif: bytes = b""
    xmp: bytes = b""
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()
    resolution: tuple[int, int, int, int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.icc or self.exif or self.xmp or self.png_chunks or self.resolution)

    def to_bytes(self) -> bytes:
        """The container's record set, compressed (the inverse of :func:`from_bytes`)."""
        records = [(_ICC, self.icc), (_EXIF, self.exif), (_XMP, self.xmp)]
        records += [(_PNG_CHUNK, kind + data) for kind, data in self.png_chunks]
        if self.resolution is not None:
            records.append((_RESOLUTION, _RES.pack(*self.resolution)))
        raw = b"".join(struct.pack("<BI", tag, len(data)) + data for tag, data in records if data)
        return zlib.compress(raw, 9)

    def pillow_info(self) -> dict:
        """Pillow's ``Image.info`` keys for this metadata: icc_profile, exif (b"Exif\\0\\0" + block,
        as Pillow's JPEG and WebP writers take it), xmp, dpi (from an inch or cm resolution) and
        one key per PNG text chunk."""
        info: dict = {}
        if self.icc:
            info["icc_profile"] = self.icc
        if self.exif:
            info["exif"] = b"Exif\x00\x00" + self.exif
        if self.xmp:
            info["xmp"] = self.xmp
        if self.resolution is not None and self.resolution[4] in (2, 3):
            xn, xd, yn, yd, unit = self.resolution
            scale = 1.0 if unit == 2 else 2.54
            info["dpi"] = (xn / xd * scale, yn / yd * scale)
        for kind, data in self.png_chunks:
            text = _png_text(kind, data)
            if text is not None:
                info[text[0]] = text[1]
        return info

    def summary(self) -> list[str]:
        """One line per kind of metadata, for ``hpac info``."""
        lines = []
        if self.icc:
            lines.append(f"ICC profile, {len(self.icc)} bytes" + _icc_description(self.icc))
        if self.exif:
            lines.append(f"EXIF, {len(self.exif)} bytes" + _exif_camera(self.exif))
        if self.xmp:
            lines.append(f"XMP, {len(self.xmp)} bytes")
        for kind, data in self.png_chunks:
            text = _png_text(kind, data)
            lines.append(f"PNG {kind.decode()}, {len(data)} bytes" + (f": {text[0]}" if text else ""))
        if self.resolution is not None:
            xn, xd, yn, yd, unit = self.resolution
            lines.append(f"resolution {xn / xd:g} x {yn / yd:g} pixels per {RESOLUTION_UNITS[unit]}")
        return lines


def from_pillow_info(info: dict) -> ImageMetadata:
    """The icc_profile, exif (bytes with or without b"Exif\\0\\0", or an ``Image.Exif``), xmp and
    dpi of a Pillow ``Image.info`` (or save options); other keys are not kept."""
    exif = info.get("exif") or b""
    if not isinstance(exif, (bytes, bytearray)):
        exif = exif.tobytes()
    exif = bytes(exif[6:] if exif[:6] == b"Exif\x00\x00" else exif)
    xmp = info.get("xmp") or b""
    dpi = info.get("dpi")
    resolution = None
    try:  # Pillow's dpi are floats: kept to 1/1000 of a dot where they fit the record's u32
        x, y = (round(float(d) * 1000) for d in dpi[:2])
        if 0 < x < 1 << 32 and 0 < y < 1 << 32:
            resolution = (x, 1000, y, 1000, 2)
    except (TypeError, ValueError, OverflowError):  # no dpi, or not two numbers
        pass
    return ImageMetadata(bytes(info.get("icc_profile") or b""), exif,
                         xmp.encode() if isinstance(xmp, str) else bytes(xmp), (), resolution)


def from_bytes(data: bytes) -> ImageMetadata:
    """Parse the container's record set; anything malformed or oversized is a FormatError."""
    raw = _inflate(data, "metadata section")
    fields: dict = {"png_chunks": []}
    pos = 0
    while pos < len(raw):
        if pos + 5 > len(raw):
            raise FormatError("metadata section is truncated")
        tag, n = struct.unpack_from("<BI", raw, pos)
        body = raw[pos + 5 : pos + 5 + n]
        if len(body) != n:
            raise FormatError("metadata section is truncated")
        pos += 5 + n
        name = {_ICC: "icc", _EXIF: "exif", _XMP: "xmp"}.get(tag)
        if name is not None:
            if name in fields:
                raise FormatError(f"metadata section holds two {name} blocks")
            fields[name] = body
        elif tag == _PNG_CHUNK:
            if body[:4] not in PNG_KEPT:
                raise FormatError(f"metadata section holds an unknown PNG chunk {body[:4]!r}")
            fields["png_chunks"].append((body[:4], body[4:]))
        elif tag == _RESOLUTION:
            if n != _RES.size or "resolution" in fields:
                raise FormatError("invalid resolution in metadata section")
            res = _RES.unpack(body)
            if res[1] == 0 or res[3] == 0 or res[4] not in RESOLUTION_UNITS:
                raise FormatError("invalid resolution in metadata section")
            fields["resolution"] = res
        else:
            raise FormatError(f"unknown record {tag} in metadata section")
    fields["png_chunks"] = tuple(fields["png_chunks"])
    return ImageMetadata(**fields)


def _inflate(data: bytes, what: str, error=FormatError) -> bytes:
    """zlib-decompress at most MAX_BYTES (a small block may expand to any size)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_BYTES)
    except zlib.error as exc:
        raise error(f"{what} does not decompress: {exc}") from None
    if d.unconsumed_tail:
        raise error(f"{what} expands past {MAX_BYTES} bytes")
    if not d.eof:
        raise error(f"{what} is truncated")
    return out


# ---- PNG ----------------------------------------------------------------------------------------

def _png_chunks(data: bytes):
    """(type, data) of every chunk of a PNG (the CRCs were checked when the pixels were read)."""
    pos = 8
    while pos + 8 <= len(data):
        n, kind = struct.unpack_from(">I4s", data, pos)
        yield kind, data[pos + 8 : pos + 8 + n]
        if kind == b"IEND":
            return
        pos += 12 + n


def from_png(data: bytes) -> ImageMetadata:
    """The metadata of a PNG file's bytes."""
    icc = exif = xmp = b""
    chunks, resolution = [], None
    for kind, body in _png_chunks(data):
        if kind == b"iCCP":
            name_end = body.find(b"\0")
            if name_end < 0 or body[name_end + 1 : name_end + 2] != b"\0":
                raise UnsupportedImageError("PNG iCCP chunk without a zlib-compressed profile")
            icc = _inflate(body[name_end + 2 :], "the PNG's ICC profile", UnsupportedImageError)
        elif kind == b"eXIf":
            exif = body
        elif kind == b"iTXt" and body.startswith(XMP_KEYWORD + b"\0"):
            xmp = _itxt_text(body)
        elif kind == b"pHYs" and len(body) == 9:
            x, y, unit = struct.unpack(">IIB", body)
            if x and y:  # per metre: kept exactly as per centimetre
                resolution = (x, 100, y, 100, 3) if unit == 1 else (x, 1, y, 1, 1)
        elif kind in PNG_KEPT:
            chunks.append((kind, body))
    return ImageMetadata(icc, exif, xmp, tuple(chunks), resolution)


def _itxt_text(body: bytes) -> bytes:
    """The text of an iTXt chunk (keyword, flags, language, translated keyword, text)."""
    key_end = body.find(b"\0")
    compressed = body[key_end + 1 : key_end + 2] == b"\x01"
    lang_end = body.find(b"\0", key_end + 3)
    tkey_end = body.find(b"\0", lang_end + 1) if lang_end >= 0 else -1
    if tkey_end < 0:
        raise UnsupportedImageError("malformed PNG iTXt chunk")
    text = body[tkey_end + 1 :]
    return _inflate(text, "a PNG iTXt chunk", UnsupportedImageError) if compressed else text


def _png_text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk; None for other chunks or unreadable text."""
    if kind not in (b"tEXt", b"zTXt", b"iTXt") or b"\0" not in body:
        return None
    key, rest = body.split(b"\0", 1)
    try:
        if kind == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":
            return key.decode("latin-1"), _inflate(rest[1:], "zTXt").decode("latin-1")
        return key.decode("latin-1"), _itxt_text(body).decode("utf-8")
    except (FormatError, UnsupportedImageError, UnicodeDecodeError):
        return None


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def into_png(png: bytes, meta: ImageMetadata) -> bytes:
    """``png`` (as written by hpac: IHDR first) with the metadata's chunks after its IHDR."""
    colour = [_chunk(b"iCCP", ICC_NAME + b"\0\0" + zlib.compress(meta.icc, 9))] if meta.icc else []
    colour += [_chunk(k, d) for k, d in meta.png_chunks if k in _PNG_COLOUR]
    rest = []
    if meta.resolution is not None:
        rest.append(_chunk(b"pHYs", _phys(meta.resolution)))
    if meta.exif:
        rest.append(_chunk(b"eXIf", meta.exif))
    if meta.xmp:
        rest.append(_chunk(b"iTXt", XMP_KEYWORD + b"\0\0\0\0\0" + meta.xmp))
    rest += [_chunk(k, d) for k, d in meta.png_chunks if k not in _PNG_COLOUR]
    end_of_ihdr = 8 + 12 + 13
    return png[:end_of_ihdr] + b"".join(colour + rest) + png[end_of_ihdr:]


def _phys(res: tuple[int, int, int, int, int]) -> bytes:
    """A pHYs body: pixels per metre (rounded unless the resolution came from one), or an aspect ratio."""
    xn, xd, yn, yd, unit = res
    if unit == 1:
        return struct.pack(">IIB", round(xn / xd), round(yn / yd), 0)
    per_metre = 100 if unit == 3 else 10000 / 254
    return struct.pack(">IIB", round(xn * per_metre / xd), round(yn * per_metre / yd), 1)


# ---- TIFF ---------------------------------------------------------------------------------------

def _exif_tags(exif) -> dict:
    """The tags of a Pillow ``Image.Exif`` that hpac keeps: :data:`TIFF_EXIF_TAGS` of its first
    IFD, and its EXIF (with interoperability) and GPS sub-IFDs as dicts."""
    tags = {t: exif[t] for t in TIFF_EXIF_TAGS if t in exif}
    for ifd in (_EXIF_IFD, _GPS_IFD):
        if ifd in exif:
            sub = dict(exif.get_ifd(ifd))
            if ifd == _EXIF_IFD and _INTEROP_IFD in sub:
                sub[_INTEROP_IFD] = dict(exif.get_ifd(_INTEROP_IFD))
            tags[ifd] = sub
    return tags


def tiff_ifd(data: bytes, offset: int | None = None):
    """Pillow's IFD of a TIFF file's bytes at ``offset`` (default: the first IFD), its tags
    loaded; Pillow's warnings on malformed tags are silenced (callers check what they use)."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
    f = io.BytesIO(data)
    f.seek(ifd.next if offset is None else offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ifd.load(f)
    return ifd


def from_tiff(data: bytes) -> ImageMetadata:
    """The metadata of a TIFF file's first IFD."""
    from PIL import Image, TiffImagePlugin, TiffTags

    try:
        ifd = tiff_ifd(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = Image.Exif()
            exif.load(data)
            tags = _exif_tags(exif)
    except Exception as exc:  # Pillow raises many types on a malformed IFD
        raise UnsupportedImageError(f"cannot read the TIFF's metadata ({exc}); strip it to code the pixels alone") from None
    block = b""
    if tags:
        out = Image.Exif()
        for tag, value in tags.items():
            out[tag] = value
        block = out.tobytes()[6:]
    return ImageMetadata(_as_bytes(ifd.get(_TIFF_ICC, b"")), block, _as_bytes(ifd.get(_TIFF_XMP, b"")), (),
                         _tiff_resolution(ifd))


def _tiff_resolution(ifd) -> tuple[int, int, int, int, int] | None:
    """(x num, x den, y num, y den, unit) of a loaded IFD; None where absent or malformed (a
    resolution is not a pixel: a file whose tags say nothing sensible keeps none)."""
    x, y, unit = ifd.get(282), ifd.get(283), ifd.get(296, 2)
    parts = []
    for r in (x, y):
        num, den = getattr(r, "numerator", None), getattr(r, "denominator", None)
        if not isinstance(num, int) or not isinstance(den, int) or not 0 < num < 1 << 32 or not 0 < den < 1 << 32:
            return None
        parts += [num, den]
    return (*parts, unit if isinstance(unit, int) and unit in (1, 2, 3) else 2)


def _as_bytes(value) -> bytes:
    """A BYTE/UNDEFINED tag's value as bytes (Pillow gives bytes, or a tuple of ints for BYTE)."""
    return bytes(value) if isinstance(value, (bytes, tuple)) else b""


def into_tiff(tiff: bytes, meta: ImageMetadata) -> bytes:
    """``tiff`` (as written by hpac: one IFD, strips) with the metadata's tags in its IFD.
    Rebuilt as Pillow writes a TIFF: header, IFD (Pillow's serialiser, which also writes the
    EXIF and GPS sub-IFDs), then the strips unchanged."""
    from PIL import Image, TiffImagePlugin, TiffTags

    ifd = tiff_ifd(tiff)
    tags = {tag: ifd[tag] for tag in list(ifd.keys())}  # loaded lazily; the serialiser writes loaded tags only
    offsets, counts = _tuple(tags[273]), _tuple(tags[279])
    strips = b"".join(tiff[o : o + c] for o, c in zip(offsets, counts))
    relative = [0]
    for c in counts[:-1]:
        relative.append(relative[-1] + c)
    ifd.tagtype[273] = TiffTags.LONG  # the serialiser moves strip offsets past the IFD's data
    ifd[273] = tuple(relative) if len(relative) > 1 else relative[0]
    if meta.exif:
        exif = Image.Exif()
        exif.load(meta.exif)
        for tag, value in _exif_tags(exif).items():
            ifd[tag] = value
    if meta.icc:
        ifd.tagtype[_TIFF_ICC] = TiffTags.UNDEFINED
        ifd[_TIFF_ICC] = meta.icc
    if meta.xmp:
        ifd.tagtype[_TIFF_XMP] = TiffTags.BYTE
        ifd[_TIFF_XMP] = meta.xmp
    if meta.resolution is not None:
        xn, xd, yn, yd, unit = meta.resolution
        ifd[282] = TiffImagePlugin.IFDRational(xn, xd)
        ifd[283] = TiffImagePlugin.IFDRational(yn, yd)
        ifd[296] = unit
    first_ifd = 8
    return tiff[:4] + first_ifd.to_bytes(4, "little" if tiff[:2] == b"II" else "big") + ifd.tobytes(first_ifd) + strips


def _tuple(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,)


def _icc_description(icc: bytes) -> str:
    """ ": <profile description>" where Pillow's ImageCms reads it, else ""."""
    try:
        from PIL import ImageCms

        return ": " + ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except Exception:  # no littlecms, or not a profile: the size says enough
        return ""


def _exif_camera(block: bytes) -> str:
    """ ": <make> <model>" from an EXIF block where it names them, else ""."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = Image.Exif()
            exif.load(block)
            camera = " ".join(str(exif[t]).strip("\0 ") for t in (271, 272) if t in exif)
    except Exception:
        return ""
    return f": {camera}" if camera else ""
