"""id_space(9F): a range of integers allocated next-fit (a driver's minor numbers)."""

from __future__ import annotations

import errno

from kstatpy.errors import KstatError

__all__ = ["IdSpace"]


class IdSpace:
    """id_space(9F): integers in ``[low, high]``, allocated next-fit.

    The next allocation starts after the last one, so a freed id is not handed out
    again until the space wraps. Not locked: the owner's lock guards it.
    """

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._next = low
        self._used: set[int] = set()

    def alloc(self) -> int:
        """id_alloc_nosleep: the next free id at or after the cursor, wrapping.

        :raises KstatError: ENOMEM when every id is in use.
        """
        span = self.high - self.low + 1
        if len(self._used) >= span:
            raise KstatError(errno.ENOMEM, f"id space [{self.low}, {self.high}] exhausted")
        i = self._next
        while i in self._used:
            i = self.low if i >= self.high else i + 1
        self._used.add(i)
        self._next = self.low if i >= self.high else i + 1
        return i

    def free(self, i: int) -> None:
        """id_free: give ``i`` back."""
        self._used.remove(i)

    def allocated(self, i: int) -> bool:
        """True while ``i`` is allocated."""
        return i in self._used

    def __len__(self) -> int:
        return len(self._used)
