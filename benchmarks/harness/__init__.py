"""Shared plumbing of the benchmark scenarios in ``benchmarks/``: each script only says what it measures.

- :mod:`harness.workload`: where the data lives (``../shared/data`` beside the clone, ``--data`` or
  ``EMBEDRT_DATA``) and the sentences a scenario sends, else embedrt's built-in Chinese workload;
- :mod:`harness.artifacts`: stand-in models and bundles, built once and cached under ``benchmarks/.cache``
  in a folder keyed by the export code's git tree;
- :mod:`harness.server`: ``embedrt serve`` in a subprocess (free port, health wait, stop), its CPU time and
  memory from ``/proc``, a raw keep-alive client;
- :mod:`harness.load`: the load generators that drive a server (threads, asyncio raw sockets, httpx);
- :mod:`harness.peers`: what embedrt is compared with (OpenVINO used directly, sentence-transformers on
  PyTorch and ONNX, fastembed, CTranslate2); imports nothing of embedrt, so the peers' venv can load it;
- :mod:`harness.timing`: percentiles and the timing loops every scenario shares;
- :mod:`harness.report`: results files stamped with commit, date, CPU model and flags, load, versions.

Scenarios import it as ``harness``: Python puts a script's own folder on ``sys.path``.
"""
