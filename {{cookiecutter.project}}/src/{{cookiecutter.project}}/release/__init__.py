"""Deciding on a release: the gate (a pure decision), the champion it is compared with, and the
release files CI hands from training to deployment."""
