"""The errors zoo.data raises: missing data, unreadable files and invalid stream specs.

Each message is one line naming the dataset or file and the problem, so the CLI can print it as is.
"""

from __future__ import annotations

from registry.errors import ZooError


class DataError(ZooError):
    """A dataset file is malformed or refused (bad IDX header, truncated CIFAR batch, unsafe pickle...)."""


class DataNotFoundError(DataError):
    """A dataset is not on disk in any of the folders searched, and downloading was not allowed."""


class StreamSpecError(DataError, ValueError):
    """A stream spec has an unknown key, a mistyped value or an impossible combination of fields."""
