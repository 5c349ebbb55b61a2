"""Fault injection for tests: kill the process at an exact, named moment instead of relying on timing luck.

A tool calls ``kill_point(name)`` where an interruption matters (after a file is written, mid-epoch, before a
rename); when the environment variable ``CXRGAN_KILL_AT`` equals that name, the process SIGKILLs itself there, as
``kill -9`` or a power cut would. Without the variable every point is a no-op. The names in use:

- ``wrote:FILE``: right after a generative checkpoint FILE (e.g. ``ckpt-000001.pt``) is written
- ``train_resnet:seedK-epochE-stepS``: mid-epoch, after optimiser step S (from 1) of epoch E of seed K
  (``seedK-pretrain-epochE-stepS`` in the synthetic pretraining of --synthetic-mode pretrain)
- ``train_resnet:wrote-model-seedK.pt``: after seed K's model file is written (under a temp name in --out)
- ``train_resnet:before-publish``: every file of the run written, before it replaces --out
- ``sample:wrote-batch-K``: after batch K (from 1, over all classes) is written to the temp file
- ``make_hdf5:added-image-K``: after image K (from 1) is added to the temp file
- ``make_hdf5:before-rename``: the temp file complete and closed, before it is renamed onto --out
- ``fid_is:features-computed``: the real and generated images' features computed, nothing written
- ``fid_is:before-writing``: every number computed, before the figures and the json are written
"""

from __future__ import annotations

import os
import signal

KILL_AT = "CXRGAN_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process when ``CXRGAN_KILL_AT`` names this point; nothing otherwise."""
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
