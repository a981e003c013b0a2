"""The study's figures, one module per figure; each has `plot(study, out_dir, model)`.

The notebooks under notebooks/ are thin papermill wrappers around these functions, so the
figures can be tested without Jupyter and the notebooks stay parameter cells plus one call.
"""
