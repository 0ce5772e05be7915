"""The audit trail of reads and changes of personal data (see
:mod:`recsys.events.audit`, where it lives so the profile layer can write it)."""

from recsys.events.audit import AuditIntegrityError, AuditLog, subject_pseudonym

__all__ = ["AuditIntegrityError", "AuditLog", "subject_pseudonym"]
