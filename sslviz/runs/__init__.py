"""The run system: records and the store, the lifecycle, the run host, the local and Ray executors, sweeps.

Turns a config into a recorded run, wherever it executes, and reads runs back. Imports the engine, never the
dashboard. A new executor goes here and wraps ``host.RunHost``; the bias summary (``bias.py``) and any
diagnosis read from the records live here too, so the CLI and the pages share them.
"""
