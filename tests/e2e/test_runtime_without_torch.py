"""The runtime imports and encodes in a process where torch and friends cannot be imported."""

import json

import numpy as np

from embedrt import Encoder
from tests.helpers import run_python_blocking

BLOCKED = ("torch", "transformers", "optimum", "sentence_transformers")

SCRIPT = """
import json
from embedrt import Encoder
from embedrt.cli import main

encoder = Encoder.load({bundle!r})
vectors = encoder.encode(["花呗怎么还款", "", "混合 English 文本"])
assert main(["info", {bundle!r}]) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"loaded": loaded, "vectors": vectors.tolist(), "precision": encoder.precision}}))
"""


def test_runtime_never_imports_torch(tiny_bundle):
    result = run_python_blocking(BLOCKED, SCRIPT.format(bundle=str(tiny_bundle)), timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    expected = Encoder.load(tiny_bundle, precision=report["precision"]).encode(
        ["花呗怎么还款", "", "混合 English 文本"]
    )
    np.testing.assert_allclose(np.array(report["vectors"]), expected, atol=1e-5)


def test_package_sources_do_not_import_heavy_modules_outside_export():
    """A static check to back the runtime test: only export/ may name torch & co."""
    import pathlib
    import re

    import embedrt

    root = pathlib.Path(embedrt.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(" + "|".join(BLOCKED) + r")\b", re.M)
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "export" not in path.relative_to(root).parts and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
