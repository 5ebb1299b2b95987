"""The libraries behind ``embedrt bench``, ``eval``, ``embed-file`` and ``build-engine``.

They take typed arguments; the commands in :mod:`embedrt.cli` own the flags. Everything here runs on
the torch-free runtime, except ``eval``'s optional PyTorch reference row.
"""
