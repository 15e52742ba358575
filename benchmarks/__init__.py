"""Benchmarks of crossprefill-agents: quality, speed and memory, side by side with baselines and peers.

Not part of the installed package. ``benchmarks.data`` builds the evaluation examples,
``benchmarks.metrics`` scores compressed contexts, ``benchmarks.baselines`` holds the
non-LLM baselines and ``benchmarks.peers`` the LLMLingua peers (run in their own venv).
"""
