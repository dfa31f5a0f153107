# Type hints for ringq's public API (the implementation, __init__.py, is untyped Python).
import asyncio
import logging
import os
import pathlib
from types import TracebackType
from typing import Any, Literal, Optional, Tuple, Type, Union

from ._ringq import QueueException as QueueException

__all__ = [
    "Queue",
    "QueueException",
    "QueueEmpty",
    "QueueFull",
    "QueueLocked",
    "DURABILITIES",
    "SERIALIZERS",
]

__version__: str
logger: logging.Logger

DURABILITIES: Tuple[str, ...]
SERIALIZERS: Tuple[str, ...]

class QueueEmpty(QueueException, asyncio.QueueEmpty): ...
class QueueFull(QueueException, asyncio.QueueFull): ...
class QueueLocked(QueueException, BlockingIOError): ...

class _Guard:
    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Queue:
    """A persistent asyncio FIFO queue in one ring file; make one with ``await Queue.create``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    @classmethod
    async def create(
        cls,
        data_path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"],
        maxsize: int = 0,
        cls_storage_engine: None = None,
        *,
        durability: Literal["buffered", "periodic", "sync"] = "buffered",
        interval: float = 1.0,
        serializer: Literal["pickle", "bytes"] = "pickle",
    ) -> "Queue": ...
    def close(self) -> None: ...
    @property
    def maxsize(self) -> int: ...
    @property
    def path(self) -> pathlib.Path: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    async def put(self, item: Any) -> None: ...
    async def put_nowait(self, item: Any) -> None: ...
    async def get(self) -> Any: ...
    async def get_nowait(self) -> Any: ...
    def get_guarded(self) -> _Guard: ...
    async def task_done(self) -> None: ...
    async def join(self) -> None: ...
    async def sync(self) -> None: ...
