"""Every editing method, registered at import, in the study's order (baselines first).

Adding a method = one module (ending in its `register_method` line) + one import here + its
hyperparameter files under config/hparams/<method>/. A module imports only modules above it.
"""

from seqedit.methods import ft_l  # noqa: F401
from seqedit.methods import kn  # noqa: F401
from seqedit.methods import rome  # noqa: F401
from seqedit.methods import memit  # noqa: F401  (memit and memit_seq)
from seqedit.methods import alphaedit  # noqa: F401
from seqedit.methods import kne  # noqa: F401
from seqedit.methods import nse  # noqa: F401
from seqedit.methods import nmke  # noqa: F401
