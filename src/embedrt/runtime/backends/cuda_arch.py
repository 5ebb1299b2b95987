"""Which GPUs the installed onnxruntime-gpu has CUDA kernels for, read from its CUDA provider library.

Each onnxruntime-gpu wheel carries machine code (cubins) for a fixed list of GPU architectures
(``sm_75`` ... in 1.27+, ``sm_70`` too in the CUDA 12 wheels up to 1.26). A GPU outside the list loads
the provider, then fails its first kernel with "no kernel image is available for execution on the
device". Rather than guess the list from version numbers, this module reads it: the provider's
``.nv_fatbin`` ELF section is a run of fat binaries, each a 16-byte header (magic ``0xBA55ED50``,
version, header size, payload size) followed by entries whose headers carry their kind (1 PTX,
2 cubin) and the ``sm_XY`` they were built for. The GPU's compute capability comes from the CUDA
driver (``libcuda``) through ctypes: no torch, no cuda-python.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from embedrt.errors import BackendError
from embedrt.extras import install_command

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
_ENTRY_HEADER = struct.Struct("<HHIQ")  # kind, version, header size, padded payload size
_ENTRY_ARCH_OFFSET = 28  # u32: the XY of sm_XY
PTX, CUBIN = 1, 2
#: The CUDA driver's attribute numbers (``CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`` / ``_MINOR``).
_CC_MAJOR, _CC_MINOR = 75, 76
CUDA_PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"


@dataclass(frozen=True)
class KernelArchs:
    """The architectures a library's fat binaries hold: cubins (``86`` for sm_86) and PTX."""

    cubins: frozenset[int]
    ptx: frozenset[int]

    def runs_on(self, major: int, minor: int) -> bool:
        """CUDA's rule: a cubin for sm_XY runs on X.Z with Z >= Y; PTX for sm_XY is compiled for any GPU >= X.Y."""
        return any(arch // 10 == major and arch % 10 <= minor for arch in self.cubins) or any(
            arch <= major * 10 + minor for arch in self.ptx
        )

    def __str__(self) -> str:
        names = [f"sm_{arch}" for arch in sorted(self.cubins)] + [f"PTX {arch}" for arch in sorted(self.ptx)]
        return ", ".join(names) or "none"


def _section(data: mmap.mmap, name: bytes) -> tuple[int, int] | None:
    """(offset, size) of a section of a 64-bit little-endian ELF file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    header = struct.Struct("<IIQQQQIIQQ")
    names_offset = header.unpack_from(data, table + names_index * entry_size)[4]
    for index in range(count):
        fields = header.unpack_from(data, table + index * entry_size)
        start = names_offset + fields[0]
        if data[start : data.find(b"\0", start)] == name:
            return fields[4], fields[5]
    return None


def fatbin_archs(data: bytes | mmap.mmap, start: int = 0, end: int | None = None) -> KernelArchs:
    """The cubin and PTX architectures of the fat binaries laid end to end in ``data[start:end]``."""
    end = len(data) if end is None else end
    cubins: set[int] = set()
    ptx: set[int] = set()
    position = start
    while position + _FATBIN_HEADER.size <= end:
        magic, _, header_size, size = _FATBIN_HEADER.unpack_from(data, position)
        if magic != FATBIN_MAGIC:  # alignment padding between fat binaries
            position += 8
            continue
        entry, stop = position + header_size, min(position + header_size + size, end)
        while entry + _ENTRY_ARCH_OFFSET + 4 <= stop:
            kind, _, entry_header, payload = _ENTRY_HEADER.unpack_from(data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + _ENTRY_ARCH_OFFSET)
            {CUBIN: cubins, PTX: ptx}.get(kind, set()).add(arch)
            if entry_header == 0:
                break
            entry += entry_header + payload
        position = stop
    return KernelArchs(frozenset(cubins), frozenset(ptx))


def library_archs(path: Path) -> KernelArchs | None:
    """The architectures in ``path``'s ``.nv_fatbin`` section; None when it is not an ELF file with one."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = _section(data, b".nv_fatbin")
            if found is None:
                return None
            offset, size = found
            return fatbin_archs(data, offset, offset + size)
    except (OSError, ValueError, struct.error):
        return None


def compute_capability(device_id: int = 0) -> tuple[str, int, int] | None:
    """(name, major, minor) of CUDA device ``device_id`` from the driver; None when there is no driver or device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    device = ctypes.c_int()
    major, minor = ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    calls = (
        lambda: driver.cuInit(0),
        lambda: driver.cuDeviceGet(ctypes.byref(device), device_id),
        lambda: driver.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device),
        lambda: driver.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device),
        lambda: driver.cuDeviceGetName(name, len(name), device),
    )
    if any(call() != 0 for call in calls):
        return None
    return name.value.decode(errors="replace"), major.value, minor.value


def check_cuda_kernels(ort: object, device_id: int = 0) -> None:
    """Raise :class:`BackendError` when the installed onnxruntime-gpu has no kernels for this GPU.

    Says nothing when either side cannot be read (no driver, a library without fat binaries): the
    provider then starts or fails on its own, and :func:`explain_kernel_error` words that failure.
    """
    library = Path(getattr(ort, "__file__", "") or ".").parent / "capi" / CUDA_PROVIDER_LIBRARY
    archs = library_archs(library) if library.is_file() else None
    gpu = compute_capability(device_id) if archs is not None and (archs.cubins or archs.ptx) else None
    if archs is None or gpu is None:
        return
    name, major, minor = gpu
    if not archs.runs_on(major, minor):
        raise BackendError(no_kernels_message(name, major, minor, archs, getattr(ort, "__version__", "?")))


def no_kernels_message(name: str, major: int, minor: int, archs: KernelArchs, version: str) -> str:
    older = major * 10 + minor < min(archs.cubins | archs.ptx, default=0)
    fix = (
        "older GPUs (Volta, sm_70) need the CUDA 12 build: "
        f"pip uninstall -y onnxruntime-gpu && {install_command('gpu-cuda12')}"
        if older
        else "install an onnxruntime-gpu built for it (see the install matrix in docs/gpu.md)"
    )
    return (
        f"this GPU ({name}, compute capability {major}.{minor}) is not among the architectures onnxruntime-gpu "
        f"{version} has CUDA kernels for ({archs}; read from {CUDA_PROVIDER_LIBRARY}); {fix}"
    )


def explain_kernel_error(err: BaseException) -> str:
    """A sentence to add when ONNX Runtime reports CUDA's "no kernel image", else an empty string."""
    if "no kernel image" not in str(err):
        return ""
    return (
        "; CUDA found no kernel for this GPU's architecture in onnxruntime-gpu: check the install matrix in "
        'docs/gpu.md (a V100 needs "embedrt[gpu-cuda12]")'
    )
