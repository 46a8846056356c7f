"""Sources and sinks: the interfaces and the built-in connectors."""

from lockgate.connectors._file import FileSource as FileSource
from lockgate.connectors._file_sink import FileSink as FileSink
from lockgate.connectors._sink import PrintSink as PrintSink
from lockgate.connectors._sink import Sink as Sink
from lockgate.connectors._sink import SinkWriter as SinkWriter
from lockgate.connectors._source import AsyncIterableSource as AsyncIterableSource
from lockgate.connectors._source import CollectionSource as CollectionSource
from lockgate.connectors._source import QueueSource as QueueSource
from lockgate.connectors._source import Source as Source
from lockgate.connectors._source import SourceReader as SourceReader
from lockgate.connectors._transactional import CollectSink as CollectSink
from lockgate.connectors._transactional import TransactionalWriter as TransactionalWriter
from lockgate.connectors._transactional import TwoPhaseCommitSink as TwoPhaseCommitSink
