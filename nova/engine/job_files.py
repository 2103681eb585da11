"""The names of the files the engine reads and writes in a job's directory: one home for
them, used by the worker, the products, the file downloads and result reuse."""

from __future__ import annotations

AXY_NAME = "job.axy"  # the extracted sources with the solve's options in its header
LOG_NAME = "log"
WCS_NAME = "wcs.fits"  # its presence means "solved"
CORR_NAME = "corr.fits"
RDLS_NAME = "rdls.fits"
# The engine's best match (log-odds, stars matched, index): the solution's quality.
MATCH_NAME = "match.fits"
ANNOTATIONS_NAME = "annotations.json"
ENGINE_CONFIG_NAME = "engine.cfg"
# job.axy as extraction wrote it, kept while header attempts rewrite job.axy.
JOB_AXY_BASE_NAME = "job-unhinted.axy"
VERIFY_WCS_NAME = "header-wcs.fits"  # a header attempt's WCS for the engine to verify
BAND_DIR_PREFIX = "band-"  # one directory per raced scale band
# What the engine writes when it solves; wcs.fits last, as it is moved into place: its
# presence means "solved".
SOLUTION_NAMES = (CORR_NAME, RDLS_NAME, MATCH_NAME, WCS_NAME)
