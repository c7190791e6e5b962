# bms.console: the line console, the documented fallback when aiorepl is not installed.
# Small on purpose: it is imported at boot, while bms.diag (the REPL functions) is imported
# only when the first command arrives (bms.app's REPL proxy).


async def console(g, stream=None, out=None):
    """Line console: the documented fallback when aiorepl is not installed.

    Reads lines from the serial input without blocking the other tasks and evaluates each
    one with the names in g (bms = Diag): `bms.status()` and the other calls work as on the
    full REPL, but only one line at a time and without editing. Ctrl-C stops the firmware
    (the FETs go off).
    """
    import asyncio
    import select
    import sys

    stream = stream if stream is not None else sys.stdin
    out = out if out is not None else print
    poller = select.poll()
    poller.register(stream, select.POLLIN)
    line = ""
    while True:
        if not poller.poll(0):
            await asyncio.sleep_ms(20)  # type: ignore[attr-defined]
            continue
        ch = stream.read(1)
        if not ch:  # end of input: keep protecting, stop listening
            poller.unregister(stream)
            while True:
                await asyncio.sleep_ms(1000)  # type: ignore[attr-defined]
        if ch not in "\r\n":
            line += ch
            continue
        cmd = line.strip()
        line = ""
        if not cmd:
            continue
        try:
            try:
                r = eval(cmd, g)
                if r is not None:
                    out(repr(r))
            except SyntaxError:
                exec(cmd, g)
        except Exception as e:  # noqa: BLE001 - a typo at the console must not stop the BMS
            out("error: %r" % (e,))
