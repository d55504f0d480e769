"""Task streams for continual learning, built from real datasets.

``build_stream(spec)`` loads a dataset (sklearn digits, MNIST, Fashion-MNIST, CIFAR-10/100, Tiny ImageNet or a
feature-stream file) and cuts it into a TaskStream of Tasks, each with train/val/test Splits of normalised
float32 inputs and global int64 labels. Scenarios: split (disjoint class groups), permuted and rotated
(domain-incremental), coarse (CIFAR-100 superclasses). Nothing is ever loaded with an unrestricted pickle.
"""

from .build import build_stream
from .datasets import DATASETS, load_dataset
from .errors import DataError, DataNotFoundError, StreamSpecError
from .features import read_feature_stream, write_feature_stream
from .paths import default_data_root
from .raw import RawDataset
from .spec import SCENARIOS, StreamSpec
from .stream import Split, Task, TaskStream

__all__ = ["DATASETS", "DataError", "DataNotFoundError", "RawDataset", "SCENARIOS", "Split", "StreamSpec",
           "StreamSpecError", "Task", "TaskStream", "build_stream", "default_data_root", "load_dataset",
           "read_feature_stream", "write_feature_stream"]
