"""Checkpoint storage, snapshot and savepoint formats, their readers and writers.

Empty for now: the checkpointing work fills it. The folder exists so the layout shows the architecture.
"""
