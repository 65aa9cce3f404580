"""The store: cases, their photos and reports, verified references and jobs, behind SQLAlchemy.

SQLite (WAL mode) by default, PostgreSQL by URL (``postgresql+psycopg://``); the same tables on both.
"""

from kiln.serve.store.database import CasePage, CaseQuery, Store, open_store
from kiln.serve.store.models import (
    ApiKeyRecord,
    Base,
    CaseImageRecord,
    CaseRecord,
    JobRecord,
    ReferenceRecord,
)

__all__ = ["ApiKeyRecord", "Base", "CaseImageRecord", "CasePage", "CaseQuery", "CaseRecord", "JobRecord", "ReferenceRecord", "Store", "open_store"]
