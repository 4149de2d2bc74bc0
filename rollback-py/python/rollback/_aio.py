"""The coroutine side of the ``*_async`` calls.

A call is prepared (its arguments checked) by the native method, and started on the
module's runtime only when its coroutine first runs, as with any ``async def``:
``asyncio.create_task``, ``TaskGroup.create_task`` and ``asyncio.gather`` take it.
Its result comes back through an asyncio future of the running loop.
"""

import asyncio
from typing import Any


async def run(call: Any) -> Any:
    """Starts ``call`` and waits for its result. Cancelling the task (or closing the
    coroutine) gives the call up: a rollback stops at its next step boundary, a
    snapshot is ended at once."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    call.start(loop, future)
    try:
        return await future
    finally:
        if not future.done() or future.cancelled():
            call.cancel()


def settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    """Called on the loop's thread when the call has ended."""
    if future.done():  # cancelled meanwhile: nobody waits for it
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
