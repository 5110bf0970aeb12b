"""A booby-trapped pickle for the tests that check no model or checkpoint file runs code when loaded."""

from __future__ import annotations

import os
from pathlib import Path


class RunsCode:
    """Unpickling this calls ``os.system("touch <marker>")``: the file the issue was measured with.

    ``torch.save({"config": RunsCode(marker)}, path)`` writes a ``.pt`` file that creates
    ``marker`` when a full (not weights-only) unpickler opens it.
    """

    def __init__(self, marker: str | os.PathLike) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
