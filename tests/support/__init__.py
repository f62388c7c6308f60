"""Helpers shared by the tests. Test modules import these, never each other."""
