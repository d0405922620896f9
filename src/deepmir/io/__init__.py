"""Reading and writing the BIDS layout of the data contract."""
