"""From run folders to the study's numbers: collection, intervals over seeds, claims."""
