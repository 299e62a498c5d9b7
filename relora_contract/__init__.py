"""The contract between the operator and the worker, defined once (issue 16).

Both ``relora_operator`` (no torch) and ``relora_worker`` import these facts instead of restating them:

* ``exit_codes`` — the worker's exit codes, what each means, and which ones a retry cannot change;
* ``strategies`` — the strategy names and the groups the two sides branch on;
* ``hashing`` — the one short stable hash of targets and identities (storage paths, Job names, metadata).

This package imports nothing beyond the standard library, so either side can depend on it.
``tests/contract/test_single_source.py`` fails when another module defines its own copy of one of them.
"""
