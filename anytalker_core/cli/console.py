"""What the command line shows while it works: a progress bar, status lines, and Ctrl-C as a clean stop."""

from __future__ import annotations

import sys
from typing import Any

import torch


class Progress:
    """One tqdm bar over every sampling step of every window; the window number in its label."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc="sampling", unit="step", file=sys.stderr, dynamic_ncols=True)
        self.windows, self.index, self.base = 1, 0, 0

    def on_window(self, window: Any, total: int) -> None:
        self.windows, self.index = total, window.index
        self.base = self.bar.n
        if total > 1:
            self.bar.set_description(f"window {window.index + 1}/{total}")

    def step(self, step: int, total: int, _x0: torch.Tensor) -> None:
        if self.bar.total is None:
            self.bar.reset(total=total * self.windows)
        self.bar.update(self.base + step + 1 - self.bar.n)
        if step + 1 == total:  # the VAE decode and the mp4 writing come next
            where = f"window {self.index + 1}/{self.windows}: " if self.windows > 1 else ""
            self.bar.set_description(f"{where}decoding and writing")

    def close(self) -> None:
        self.bar.close()


class StopOnCtrlC:
    """The first Ctrl-C asks to stop after the current step (the finished windows are kept); a second aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> "StopOnCtrlC":
        import signal

        def handler(_signum, _frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *_: Any) -> None:
        import signal

        signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.requested


def status(message: str) -> None:
    for line in message.splitlines():
        print(f"  {line}", file=sys.stderr)
