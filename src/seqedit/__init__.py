"""seqedit: neuron-level sequential knowledge editing on one shared core.

The library behind the Snakemake workflow: data loaders and the synthetic world
(`seqedit.data`), model loading and the architecture table (`seqedit.models`), the
shared editing machinery (`seqedit.core`), one module per method (`seqedit.methods`),
evaluation (`seqedit.evaluate`) and the sequential runner (`seqedit.runner`).
"""

__version__ = "0.1.0"
