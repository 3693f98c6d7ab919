# A package, so these modules never clash with same-named files in tests/system.
