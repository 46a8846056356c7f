"""The logical graph (transformations) and the job graph (chains of operators joined by edges)."""

from lockgate.graph._job_graph import JobEdge as JobEdge
from lockgate.graph._job_graph import JobGraph as JobGraph
from lockgate.graph._job_graph import JobVertex as JobVertex
from lockgate.graph._job_graph import build_job_graph as build_job_graph
from lockgate.graph._transformations import BroadcastPartitioner as BroadcastPartitioner
from lockgate.graph._transformations import BroadcastProcessSpec as BroadcastProcessSpec
from lockgate.graph._transformations import FilterSpec as FilterSpec
from lockgate.graph._transformations import FlatMapSpec as FlatMapSpec
from lockgate.graph._transformations import ForwardPartitioner as ForwardPartitioner
from lockgate.graph._transformations import KeyedMapSpec as KeyedMapSpec
from lockgate.graph._transformations import KeyedProcessSpec as KeyedProcessSpec
from lockgate.graph._transformations import KeyGroupPartitioner as KeyGroupPartitioner
from lockgate.graph._transformations import KeySelector as KeySelector
from lockgate.graph._transformations import MapSpec as MapSpec
from lockgate.graph._transformations import OperatorSpec as OperatorSpec
from lockgate.graph._transformations import OperatorTransformation as OperatorTransformation
from lockgate.graph._transformations import Partitioner as Partitioner
from lockgate.graph._transformations import PartitionTransformation as PartitionTransformation
from lockgate.graph._transformations import PhysicalTransformation as PhysicalTransformation
from lockgate.graph._transformations import ProcessSpec as ProcessSpec
from lockgate.graph._transformations import RebalancePartitioner as RebalancePartitioner
from lockgate.graph._transformations import ReduceSpec as ReduceSpec
from lockgate.graph._transformations import SinkSpec as SinkSpec
from lockgate.graph._transformations import SourceTransformation as SourceTransformation
from lockgate.graph._transformations import Transformation as Transformation
from lockgate.graph._transformations import UnionTransformation as UnionTransformation
