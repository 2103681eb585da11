"""Pictures and files derived from a solution (annotated, grid, sky plots, KMZ, new FITS):
plain values in, files out; no Flask and no database."""
