"""Converters between published checkpoints and jav run directories
(`python -m jav.convert --help`)."""
