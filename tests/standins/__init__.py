"""Stand-ins for services that cannot be reached from a test machine; each speaks real HTTP(S)."""
