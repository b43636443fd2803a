"""Ctrl-C and SIGTERM during training: finish the step, save, exit cleanly."""

from __future__ import annotations


class StopFlag:
    received: int = 0  # the signal number that asked to stop (0: none)


class deferred_stop:
    """While active, Ctrl-C (SIGINT) and SIGTERM (timeout, SLURM, Kubernetes, docker stop) only set
    a flag that the loop checks between steps, so the run saves a checkpoint and exits cleanly
    (main thread only)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __enter__(self) -> StopFlag:
        import signal
        import threading

        self.flag = StopFlag()
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                num = getattr(signal, name)
                self.previous[num] = signal.signal(num, lambda signum, _: setattr(self.flag, "received", signum))
        return self.flag

    def __exit__(self, *exc) -> None:
        import signal

        for num, handler in self.previous.items():
            signal.signal(num, handler)
