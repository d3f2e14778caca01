"""A sandbox of the ad platforms over a simulated market whose true response curves are known."""
