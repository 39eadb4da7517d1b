import asyncio

import pytest

from service.concurrency import gather_or_cancel
from service.errors import InvalidParameter


def test_results_come_back_in_order():
    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    assert asyncio.run(gather_or_cancel(value(1, 0.02), value(2, 0), value(3, 0.01))) == [1, 2, 3]


def test_the_first_failure_cancels_the_rest_and_is_raised_unwrapped():
    cancelled = []

    async def slow() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 0

    async def bad() -> int:
        await asyncio.sleep(0)
        raise InvalidParameter("file 2 is not audio")

    with pytest.raises(InvalidParameter, match="file 2 is not audio"):
        asyncio.run(gather_or_cancel(slow(), bad(), slow()))
    assert cancelled == [True, True]
