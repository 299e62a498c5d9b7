"""The contract between the operator and the worker, defined once (issue 16).

Both ``relora_operator`` (no torch) and ``relora_worker`` import these facts instead of restating them:

* ``exit_codes`` — the worker's exit codes, what each means, and which ones a retry cannot change;
* ``strategies`` — the strategy names and the groups the two sides branch on;
* ``hashing`` — the one short stable hash of targets and identities (storage paths, Job names, metadata);
* ``summary`` — the termination summary (``TerminationSummary``, versioned by ``schema_version``);
* ``result`` — result.json's typed keys (``ResultRecord``, versioned by ``format``);
* ``verdict`` — the one rule from a termination summary to the run's verdict (ready, below threshold, bad input,
  retryable, unknown);
* ``batch`` — ``relora readapt-batch``'s plan and batch record (versioned by ``format``) and its exit code rule.

It needs the standard library and pydantic (both sides' dependency), never torch.
``tests/contract/test_single_source.py`` fails when another module defines its own copy of one of them.
"""
