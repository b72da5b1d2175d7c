"""Distribution metrics of generated clips against real ones (FVD: jav.metrics.fvd)."""
