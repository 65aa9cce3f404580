"""Applications served by kiln engines: luxury-goods authentication and packaging design."""
