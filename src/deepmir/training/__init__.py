"""Training the DEEPMIR network on simulated (or any annotated BIDS) data."""
