"""NIfTI volumes through SimpleITK, keeping spacing, origin and direction.

Array order: SimpleITK gives numpy arrays in reversed index order, ``array[k, j, i]`` for ITK
index ``(i, j, k)``. Which numpy axis holds the axial slices is read from the image direction,
never assumed from the array shape: KiTS19 ``case_00000`` has ITK size (611, 512, 512) with the
axial axis first, so its numpy array is (512, 512, 611) with slices on the LAST axis, while most
CTs give (slices, rows, cols).
"""

from __future__ import annotations

import gzip
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medchallenge.core.errors import DataError


@dataclass
class Geometry:
    """Where a volume's voxels lie in the world (ITK index order, mm)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def axial_axis(self) -> int:
        """The numpy axis (of the SimpleITK array) along which axial slices are stacked."""
        return axial_numpy_axis(self.direction, len(self.size))

    def same_grid(self, other: Geometry, tol: float = 1e-3) -> bool:
        """Same size, and spacing/origin/direction equal within ``tol``."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(s) for s in image.GetOrigin()),
            direction=tuple(float(s) for s in image.GetDirection()),
        )

    def apply(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def axial_numpy_axis(direction: tuple[float, ...], ndim: int = 3) -> int:
    """Numpy axis of the axial (superior–inferior) direction.

    ``direction`` is ITK's row-major ndim×ndim matrix whose column ``i`` is the world direction of
    index axis ``i``; the axial index axis is the one most aligned with world z. ITK index axis
    ``i`` is numpy axis ``ndim - 1 - i``.
    """
    matrix = np.asarray(direction, dtype=float).reshape(ndim, ndim)
    itk_axis = int(np.argmax(np.abs(matrix[2, :])))
    return ndim - 1 - itk_axis


@dataclass
class Volume:
    """A 3-D volume: the SimpleITK numpy array and its geometry."""

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None

    @property
    def axial_axis(self) -> int:
        return self.geometry.axial_axis

    def axial_first(self) -> np.ndarray:
        """The array with axial slices on axis 0: (slices, rows, cols), a view."""
        return np.moveaxis(self.array, self.axial_axis, 0)

    def from_axial_first(self, stack: np.ndarray) -> np.ndarray:
        """Undo :meth:`axial_first` for an array of the same shape (e.g. a prediction)."""
        return np.moveaxis(stack, 0, self.axial_axis)

    @property
    def spacing_numpy(self) -> tuple[float, ...]:
        """Voxel spacing (mm) in numpy axis order."""
        return tuple(reversed(self.geometry.spacing))


def _nifti_data_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file holds up to the end of its voxels, from its header (None: not NIfTI)."""
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if struct.unpack(endian + "i", header[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    n_voxels = 1
    for d in dims[1 : 1 + max(0, min(7, dims[0]))]:
        n_voxels *= max(1, d)
    return offset + n_voxels * bitpix // 8


def check_complete(path: Path) -> None:
    """Reject a truncated ``.nii`` / ``.nii.gz`` (SimpleITK would silently read zeros past the end).

    Uncompressed: the file must be at least header offset + voxel bytes long. Gzipped: the gzip
    trailer's ISIZE (uncompressed length mod 2**32) must match that length; O(1), no decompression.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                header = handle.read(540)
            expected = _nifti_data_bytes(header)
            with open(path, "rb") as raw:
                raw.seek(-4, 2)
                isize = struct.unpack("<I", raw.read(4))[0]
            if expected is not None and isize != expected % 2**32:
                raise DataError(path, "truncated or corrupt .nii.gz (the gzip stream ends early)")
        else:
            with open(path, "rb") as handle:
                header = handle.read(540)
            expected = _nifti_data_bytes(header)
            if expected is not None and path.stat().st_size < expected:
                raise DataError(path, f"truncated .nii ({path.stat().st_size} of {expected} bytes)")
    except (OSError, EOFError, struct.error) as err:
        raise DataError(path, f"truncated or corrupt file ({type(err).__name__})") from err


def read_image(path: str | Path) -> sitk.Image:
    """Read any image SimpleITK can, turning failures into a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    check_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        reason = "truncated or corrupt file" if "gz" in path.suffix or "Exception" in detail else detail[:120]
        raise DataError(path, f"cannot read image ({reason})") from err


def _header_reader(path: Path) -> sitk.ImageFileReader:
    """A reader with the header of ``path`` read (voxels unread); a DataError when it is not an image."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(path, "cannot read the image header (corrupt or not an image)") from err
    return reader


@dataclass(frozen=True)
class VolumeHeader:
    """What a 3-D scalar NIfTI header says, voxels unread: the geometry (ITK order) and the voxel type
    SimpleITK loads them as (after any scl_slope rescale)."""

    geometry: Geometry
    dtype: np.dtype

    @property
    def floating(self) -> bool:
        return self.dtype.kind == "f"


def read_volume_header(path: str | Path) -> VolumeHeader:
    """The header of a 3-D single-component image, without reading its voxels (what ``check`` reads).

    Raises:
        DataError: missing, truncated, unreadable, or not a 3-D scalar volume (the messages of ``read_volume``).
    """
    path = Path(path)
    check_complete(path)
    reader = _header_reader(path)
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise DataError(path, f"is a {reader.GetDimension()}-D image ({'×'.join(map(str, size))},"
                              f" {reader.GetNumberOfComponents()} component(s)), expected a 3-D volume")
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).dtype)
    geometry = Geometry(size, tuple(float(s) for s in reader.GetSpacing()),
                        tuple(float(s) for s in reader.GetOrigin()), tuple(float(s) for s in reader.GetDirection()))
    return VolumeHeader(geometry, dtype)


def read_geometry(path: str | Path) -> Geometry:
    """The geometry from the header only, without reading the voxels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    reader = _header_reader(path)
    return Geometry(
        size=tuple(int(s) for s in reader.GetSize()),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        origin=tuple(float(s) for s in reader.GetOrigin()),
        direction=tuple(float(s) for s in reader.GetDirection()),
    )


def read_volume(path: str | Path, dtype: np.dtype | type | None = None, check_finite: bool = True) -> Volume:
    """Read a 3-D NIfTI (or any 3-D image) keeping its geometry.

    Args:
        path: the file.
        dtype: cast the voxels to this type (None: as stored). Signed CT stays signed.
        check_finite: reject NaN/inf voxels in floating images.

    Raises:
        DataError: missing, unreadable, truncated, not 3-D, or non-finite voxels.
    """
    image = read_image(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        dims = "×".join(str(s) for s in image.GetSize())
        raise DataError(
            path,
            f"is a {image.GetDimension()}-D image ({dims}, {image.GetNumberOfComponentsPerPixel()} component(s)),"
            " expected a 3-D volume",
        )
    array = sitk.GetArrayFromImage(image)
    if check_finite and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(path, f"{bad} NaN or infinite voxel(s)")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(array=array, geometry=Geometry.of(image), path=Path(path))


def write_volume(path: str | Path, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write ``array`` (SimpleITK numpy order) with ``geometry``, atomically."""
    image = sitk.GetImageFromArray(array)
    if tuple(image.GetSize()) != tuple(geometry.size):
        raise ValueError(f"array of ITK size {image.GetSize()} does not match geometry size {geometry.size}")
    geometry.apply(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # SimpleITK picks the writer from the extension: the temporary file keeps the real one
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{''.join(path.suffixes[-2:])}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
