"""Unit tests of the operator import its pure modules only; no cluster is needed."""
