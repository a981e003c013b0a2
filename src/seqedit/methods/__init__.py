"""Every editing method, registered at import. Adding a method = one module + one line here."""

from seqedit.methods import memit  # noqa: F401
