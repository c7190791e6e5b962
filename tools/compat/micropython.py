"""CPython stand-in for MicroPython's built-in `micropython` module.

Only on the path of CPython (pytest, python3 tools). MicroPython's own module is
not extensible, so this file is ignored there. Never deployed to a board.
"""


def const(x):
    return x


def heap_lock():
    return 0


def heap_unlock():
    return 0


def alloc_emergency_exception_buf(n):
    pass


def schedule(fn, arg):
    fn(arg)


def mem_info(*args):
    pass
