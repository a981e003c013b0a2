"""Tests of seqedit.evaluate (a package, so basenames like test_zsre.py cannot clash with tests/data/)."""
