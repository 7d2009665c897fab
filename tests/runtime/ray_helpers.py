"""A shard writer that dies once, for the fault-tolerance test (imported by Ray workers)."""

from __future__ import annotations

import os
from pathlib import Path

from cxr_runtime.ray_sampling import ShardWriter


class DiesOnce(ShardWriter):
    """Kills its own worker process on the first shard it gets while the file named by
    CXR_TEST_DIE_ONCE exists (removing it first, so the restarted actor goes on)."""

    def __call__(self, batch):
        flag = Path(os.environ["CXR_TEST_DIE_ONCE"])
        try:
            flag.unlink()
        except FileNotFoundError:
            return super().__call__(batch)
        # half a shard written, then the process dies as a killed worker would
        start = int(batch["start"][0])
        for i, images in self.gen.batches(start + 1, seed=self.seed, start=start):
            self.writer.write(i, images[0])
        os._exit(1)


class Fails(ShardWriter):
    """A writer whose own code fails (as a full disk would): the job must stop with the message."""

    def __call__(self, batch):
        raise OSError("No space left on device (simulated)")
