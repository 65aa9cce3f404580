"""Counterfeit detection of luxury goods from several detail photos of one item (a case).

The model (``kiln:auth_multiview``) scores each photo, the pipeline gates photo quality, fuses the
views into a verdict with calibrated confidence, compares the item with verified references and
issues reports. ``synth`` makes the labelled-synthetic demo and test data.
"""
