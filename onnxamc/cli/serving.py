"""Running a TVM server process (the device agent, the tracker) until a signal stops it.

Ctrl-C, SIGTERM or SIGHUP (also while it starts) stop the server and its worker
processes, whatever address it binds: exit 0. A server process that ends by itself:
exit 1.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Callable


class _Stopped(Exception):
    pass


def run_until_stopped(start: Callable[[], object], what: str) -> int:
    from onnxamc.runtime.agent import stop

    def on_signal(signum, frame):
        raise _Stopped(signal.Signals(signum).name)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    why, server = None, None
    try:
        server = start()
        while server.proc is not None and server.proc.is_alive():
            time.sleep(0.5)
    except _Stopped as exc:
        why = str(exc)
    finally:
        for s in handled:  # a second Ctrl-C must not break the clean-up
            signal.signal(s, signal.SIG_IGN)
        try:
            if server is not None:
                stop(server)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if why:
        print(f"onnxamc: the {what} stopped ({why})", file=sys.stderr)
        return 0
    print(f"onnxamc: the {what} process ended", file=sys.stderr)
    return 1
