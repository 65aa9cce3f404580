"""Labelled-synthetic detail photos of invented luxury goods, authentic and counterfeit.

The demo and test data of the authentication app; the product itself is meant for photographs of
real, verified items (see docs/authenticity.md for the dataset layout).
"""

from kiln.apps.authenticity.synth.generate import SYNTHETIC_NOTE, SynthSpec, generate_dataset, make_case

__all__ = ["SYNTHETIC_NOTE", "SynthSpec", "generate_dataset", "make_case"]
