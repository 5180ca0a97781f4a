"""Data layer: label tables, dataset readers, HDF5 shards, procedural scenes."""
