"""Run ids: sortable and unique (`20250101-120000-1a2b3c`)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
