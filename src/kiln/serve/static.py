"""Static pages at ``/``: files as they are, and ``/name`` for ``name.html`` (pages without the suffix)."""

from __future__ import annotations

import os
import stat

from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope


class PageFiles(StaticFiles):
    """``StaticFiles`` in HTML mode that also serves ``/authenticate`` from ``authenticate.html``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ("", ".") and not os.path.splitext(path)[1] and not path.endswith("/"):
            full_path, stat_result = self.lookup_path(path + ".html")
            if stat_result is not None and stat.S_ISREG(stat_result.st_mode):
                return self.file_response(full_path, stat_result, scope)
        return await super().get_response(path, scope)
