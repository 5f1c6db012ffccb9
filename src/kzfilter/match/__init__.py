"""Matchers: the compiled Aho-Corasick name automaton, roaring-bitmap prefix sets, the Classifier."""
