"""How the study names its methods and its main comparison, shared by the analysis and the figures."""

MAIN = "main"  # the variant of the main comparison (the others are <ablation>~<value>)
# baselines first, then the methods under study
METHOD_ORDER = ["ft_l", "kn", "rome", "memit", "alphaedit", "kne", "nse", "nmke"]
METHOD_LABEL = {"ft_l": "FT-L", "kn": "KN", "rome": "ROME", "memit": "MEMIT", "alphaedit": "AlphaEdit",
                "kne": "KNE (recon.)", "nse": "NSE", "nmke": "NMKE"}
