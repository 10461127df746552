"""Raster and vector I/O shared by every stage: windows, masks, CRS alignment, atomic writes, COGs."""

#: GDAL block cache (MB): bounds memory whatever the raster size. Writers and COG conversions set it
#: (:func:`aifactory.io.cog.gdal_env`) and the ``aifactory`` command makes it GDAL's default (GDAL's own is 5 %
#: of the RAM, which a command reading a large raster fills with decoded blocks). It holds
#: a row of 512-px blocks of a streamed write (so windows thinner than a block are not recompressed) next
#: to the input blocks read meanwhile: prediction reads ~32 MB of 4-band uint16 per tile row of a 4k-wide
#: raster. Wider rasters thrash it (blocks recompressed, still correct); a larger one costs its size in peak
#: RSS (predict with 128 MB: +60 MB at both 4k² and 16k²). 192 MB keeps a whole tile row of a 20000-wide input's
#: blocks, so none is decoded twice: reading alone 0.55 → 0.37 s of CPU per 100 tiles, but predict on a
#: 20000 × 2304 crop was slower (26.4 against 24.6 s, alternated) and the 16k²/4k² peak ratio 1.096: not kept.
GDAL_CACHE_MB = 64
