"""How the study names its methods and its main comparison, shared by the analysis and the figures.

The method list, its order (baselines first) and the labels come from the registry
(`seqedit.registry`), the one place a method is declared.
"""

from seqedit.registry import available_methods, method_info

MAIN = "main"  # the variant of the main comparison (the others are <ablation>~<value> and control~<name>)
METHOD_ORDER = available_methods()
METHOD_LABEL = {m: method_info(m).label for m in METHOD_ORDER}
BASELINES = [m for m in METHOD_ORDER if method_info(m).kind == "baseline"]
METHOD_DESCRIPTION = {m: method_info(m).description for m in METHOD_ORDER}
