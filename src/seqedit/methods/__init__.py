"""Every editing method, registered at import. Adding a method = one module + one line here."""

from seqedit.methods import memit  # noqa: F401
from seqedit.methods import rome  # noqa: F401
from seqedit.methods import ft_l  # noqa: F401
from seqedit.methods import kn  # noqa: F401
from seqedit.methods import kne  # noqa: F401
from seqedit.methods import alphaedit  # noqa: F401
from seqedit.methods import nse  # noqa: F401
from seqedit.methods import nmke  # noqa: F401
