"""Image files <-> :class:`hpac.io.image.Image` (pixels at native depth, their bits, metadata).

* :mod:`~hpac.io.image`: the Image type, ``as_image``, the size check every reader runs.
* :mod:`~hpac.io.readers`: ``read_image`` (PNG, TIFF, JPEG XL, BMP, GIF, WebP, PNM, NPY, DICOM).
* :mod:`~hpac.io.writers`: PNG / TIFF / PNM / NPY / DICOM output by suffix, ``atomic_write``.
* :mod:`~hpac.io.metadata`: colour profile, EXIF, XMP, PNG chunks, resolution.
* :mod:`~hpac.io.dicom`: DICOM pixels and header (pydicom).
* :mod:`~hpac.io.classical`: lossless WebP / JPEG XL streams and headers (inputs, classical regions,
  baselines).
"""
