"""Pre-processing: band composition, 16 → 8 bit stretch, reprojection/resampling, RPC orthorectification."""
