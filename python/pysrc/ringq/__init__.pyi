# Type hints for ringq's public API (the implementation, __init__.py, is untyped Python).
import asyncio
import logging
import os
import pathlib
from types import TracebackType
from typing import Any, Generic, Literal, Optional, Tuple, Type, TypeVar, Union

from ._ringq import QueueException as QueueException

__all__ = [
    "Queue",
    "QueueException",
    "QueueEmpty",
    "QueueFull",
    "QueueLocked",
    "QueueShutDown",
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

class QueueShutDown(QueueException):
    """Raised by put and get after ``Queue.shutdown`` (a subclass of asyncio.QueueShutDown on 3.13+)."""

_T = TypeVar("_T")

class _Guard:
    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Queue(Generic[_T]):
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
    ) -> "Queue[Any]": ...
    def close(self) -> None: ...
    @property
    def maxsize(self) -> int: ...
    @property
    def path(self) -> pathlib.Path: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    async def put(self, item: _T) -> None: ...
    async def put_nowait(self, item: _T) -> None: ...
    async def get(self) -> _T: ...
    async def get_nowait(self) -> _T: ...
    def get_guarded(self) -> _Guard: ...
    async def task_done(self) -> None: ...
    async def join(self) -> None: ...
    async def sync(self) -> None: ...
    def shutdown(self, immediate: bool = False) -> None: ...
