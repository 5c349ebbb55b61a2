"""Stage 1, data: the HDF5 file contract, NIH metadata, patient splits, decoding, ingest, phantoms, download."""
