"""Sources and sinks: the interfaces and the built-in connectors."""

from lockgate.connectors._file import FileSource
from lockgate.connectors._file_sink import FileSink
from lockgate.connectors._sink import PrintSink, Sink, SinkWriter
from lockgate.connectors._source import (
    AsyncIterableSource,
    CollectionSource,
    QueueSource,
    Source,
    SourceProgress,
    SourceReader,
)
from lockgate.connectors._transactional import CollectSink, TransactionalWriter, TwoPhaseCommitSink

__all__ = [
    "AsyncIterableSource",
    "CollectSink",
    "CollectionSource",
    "FileSink",
    "FileSource",
    "PrintSink",
    "QueueSource",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceProgress",
    "SourceReader",
    "TransactionalWriter",
    "TwoPhaseCommitSink",
]
