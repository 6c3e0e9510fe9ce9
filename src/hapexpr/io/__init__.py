"""Readers of the user's input files and the atomic writers every stage shares."""
