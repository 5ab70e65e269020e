"""Keyword signals: text normalised against obfuscation, matched by one Aho-Corasick automaton."""
