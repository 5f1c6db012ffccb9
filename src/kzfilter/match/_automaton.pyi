"""Type stubs for the compiled host-name matcher (kzfilter.match._automaton)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

__all__ = ["NameAutomaton", "normalize", "STATUS_OK", "STATUS_INVALID", "STATUS_NON_ASCII",
           "KIND_EXACT", "KIND_DOMAIN", "KIND_WILDCARD", "KIND_KEYWORD"]

STATUS_OK: int
STATUS_INVALID: int
STATUS_NON_ASCII: int
KIND_EXACT: int
KIND_DOMAIN: int
KIND_WILDCARD: int
KIND_KEYWORD: int

class NameAutomaton:
    def __init__(self, patterns: Sequence[str | bytes], kinds: npt.ArrayLike,
                 priorities: npt.ArrayLike) -> None: ...
    def match_one(self, name: str | Buffer) -> tuple[int, int]: ...
    def match_all(self, name: str | Buffer) -> tuple[npt.NDArray[np.int32], int]: ...
    def match_packed(self, buf: Buffer, offsets: npt.ArrayLike,
                     out_rule: npt.NDArray[np.int32] | None = None,
                     out_status: npt.NDArray[np.uint8] | None = None,
                     ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]: ...
    def match_list(self, names: Sequence[str | bytes]
                   ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]: ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: Buffer) -> NameAutomaton: ...
    def __reduce__(self) -> tuple[object, tuple[bytes]]: ...
    @property
    def n_rules(self) -> int: ...
    @property
    def n_states(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

def normalize(name: str | Buffer) -> tuple[str | None, int]: ...
def _set_hot_bytes(nbytes: int) -> int: ...
