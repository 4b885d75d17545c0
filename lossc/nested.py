"""Deeply nested programs without deep Python recursion.

A `.loss` expression may nest brackets a thousand levels deep, and its tree is as deep.
The parser and the graph builder read like recursive descent, but the functions that
would call themselves on a sub-expression are generators: where a recursive function
would make the call, the generator yields the call's generator (a *task*) and is sent
back its result,

    inner = yield self.subexpression(opener)      # instead of inner = self.expression(...)

and `run` keeps the suspended tasks on a list. Nesting then costs a list entry, not a
Python frame: no recursion limit is reached and nothing process-wide (the interpreter's
recursion limit, a thread's stack size) needs changing. Within one level, generators
may call each other with `yield from`, as long as the chain stays short (a fixed number
of frames, whatever the input).

An exception raised by a task is thrown into the task that asked for it, just as it
would leave a recursive call, so `try` blocks around a `yield` behave as usual.
"""
from __future__ import annotations

from typing import Generator


def run(task: Generator):
    """Run `task` and every task it yields, depth first; return the task's result."""
    stack = [task]
    value, error = None, None
    while True:
        try:
            if error is not None:
                request = stack[-1].throw(error)
            else:
                request = stack[-1].send(value)
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value
            value, error = done.value, None
        except BaseException as e:
            stack.pop()
            if not stack:
                raise
            value, error = None, e
        else:
            stack.append(request)
            value, error = None, None
