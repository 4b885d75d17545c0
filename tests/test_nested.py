"""lossc.nested.run: tasks that yield tasks, run from a list rather than nested calls."""
import sys

import pytest

from lossc import nested


def countdown(n):
    """A task n levels deep: the depth it reached."""
    if n == 0:
        return 0
    below = yield countdown(n - 1)
    return below + 1


def test_nesting_far_past_the_recursion_limit_takes_no_python_stack():
    depth = 20 * sys.getrecursionlimit()
    assert nested.run(countdown(depth)) == depth


def failing(n):
    if n == 0:
        raise KeyError("at the bottom")
    yield failing(n - 1)


def catching(n):
    """Catches what a task below it raises, as a try around a recursive call would."""
    try:
        yield failing(n)
    except KeyError as e:
        return f"caught {e.args[0]}"


def test_an_exception_reaches_the_task_that_asked_as_from_a_call():
    assert nested.run(catching(5000)) == "caught at the bottom"
    with pytest.raises(KeyError, match="at the bottom"):
        nested.run(failing(5000))


def test_a_task_may_delegate_within_its_level():
    def pair(n):
        a = yield from half(n)           # a plain generator call: same level
        b = yield countdown(n)           # a task of its own
        return a + b

    def half(n):
        return (yield countdown(n // 2))
    assert nested.run(pair(3000)) == 4500
